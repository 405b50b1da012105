"""The report of scripts/synthetic_experiment.py: tables generated from the rows' JSONs (means
and spreads over seeds, differences, the issue's targets judged from the figures, not written
by hand), and how rows are scheduled, keyed and resumed."""
import json
from pathlib import Path

import pytest

from helpers import load_module

SCRIPT = Path(__file__).resolve().parents[2] / 'scripts' / 'synthetic_experiment.py'
SUBSETS = ['C', 'E', 'L', 'CE', 'CL', 'EL', 'CEL']
TEACHER = [10, 2, 20, 12, 28, 22, 30]   # mean 17.71, worst 2 (E)


@pytest.fixture(scope='module')
def experiment():
    return load_module('synthetic_experiment', SCRIPT)


class Args:
    runs, results = 'runs/experiment', 'docs/results'
    steps, eval_samples, cache, no_cache = 1500, 200, None, False


def _figures(miou: dict) -> dict:
    worst = min(miou, key=miou.get)
    return {'miou': miou, 'mean': sum(miou.values()) / len(miou), 'worst': miou[worst],
            'worst_subset': worst}


def _row(results: Path, name: str, experiment, miou: list, per_class=None) -> None:
    row = {'row': name, 'label': experiment.ROWS[name][0], 'key': 'k', 'minutes': 1.0,
           'commands': [f'train {name}', f'evaluate {name}'],
           **_figures(dict(zip(SUBSETS, miou))), 'protocol': {}}
    if per_class is not None:
        row['per_class'] = per_class
    (results / f'{name}.json').write_text(json.dumps(row))


def _tables(tmp_path: Path, experiment, rows: dict) -> str:
    for name, miou in rows.items():
        _row(tmp_path, name, experiment, miou)
    return experiment.write_tables(tmp_path).read_text()


def _section(text: str, title: str) -> str:
    return text.split(title)[1].split('\n## ')[0]


def test_seeds_are_summarised_as_mean_and_spread(tmp_path, experiment):
    text = _tables(tmp_path, experiment, {
        'teacher': TEACHER,
        'sup': [20, 10, 20, 20, 25, 20, 25], 'sup_s1': [22, 12, 22, 22, 27, 22, 27],
        'full': [21, 11, 21, 21, 26, 21, 26]})
    table = _section(text, '## Every subset, over seeds')
    sup = [ln for ln in table.splitlines() if ln.startswith('| Student: anymodal dropout')][0]
    # two seeds: mean 21, sample sd sqrt(2) = 1.41
    assert sup.startswith('| Student: anymodal dropout, L_sup only | 2 | 21.00 ± 1.41 | 11.00 ± 1.41')
    full = [ln for ln in table.splitlines() if ln.startswith('| Student: AnySeg (')][0]
    assert '| 1 | 21.00 | 11.00 |' in full and '±' not in full   # one seed: no spread
    assert 'Rows not run yet:' in text and 'full_tr_s2' in text.split('Rows not run yet:')[1]


def test_differences_spread_and_the_verdict(tmp_path, experiment):
    sup = {'sup': [20] * 7, 'sup_s1': [21] * 7, 'sup_s2': [22] * 7}          # sd 1
    full = {'full': [23] * 7, 'full_s1': [25] * 7, 'full_s2': [24] * 7}      # +3, sd 1
    text = _tables(tmp_path, experiment, {'teacher': TEACHER, **sup, **full})
    diff = [ln for ln in _section(text, '## Differences').splitlines()
            if ln.startswith('| AnySeg - L_sup only |')][0]
    # +3 ± sqrt(2); the runs paired by seed: 23-20, 25-21, 24-22
    assert '**+3.00 ± 1.41 [+3.00, +4.00, +2.00]** |' in diff
    assert 'by more than the seeds\' spread: +3.00 against ± 1.41: **yes**' in text
    (tmp_path / 'full_s1.json').unlink()
    (tmp_path / 'full_s2.json').unlink()
    text = experiment.write_tables(tmp_path).read_text()
    assert 'not judged: a single seed on a side' in text
    _row(tmp_path, 'full_s1', experiment, [20.5] * 7)
    text = experiment.write_tables(tmp_path).read_text()   # 21.75 - 21 = +0.75 vs ± 2.04
    assert '**no**' in text.split('more than the seeds\' spread')[1].split('\n')[0]


def test_targets_are_judged_for_the_best_student_group(tmp_path, experiment):
    text = _tables(tmp_path, experiment, {
        'teacher': TEACHER,
        # meets none: mean +0.5, worst +9.9, CEL -2.1
        'sup': [13, 11.9, 20, 14, 21, 20, 27.9],
        # meets all three over its two seeds: mean +5.5, worst +10, CEL -1.5
        'full_tr': [22, 12, 22, 24, 28, 26, 28.5], 'full_tr_s1': [22, 12, 22, 24, 28, 26, 28.5]})
    section = _section(text, '## Targets (the best student, `full_tr` over 2 seed(s)')
    met = [ln.rstrip(' |').rsplit('| ', 1)[1] for ln in section.splitlines()
           if ln.startswith('| ') and 'target' not in ln and '---' not in ln]
    assert met == ['yes', 'yes', 'yes']
    assert '| 30.00 | 28.50 | -1.50 | yes |' in section


def test_per_class_reading_of_the_best_student(tmp_path, experiment):
    classes = lambda cel, e: {'CEL': {'road': cel, 'wall': None}, 'E': {'road': e, 'wall': None}}  # noqa: E731
    _row(tmp_path, 'teacher', experiment, TEACHER, per_class=classes(90.0, 10.0))
    _row(tmp_path, 'sup', experiment, [20] * 7, per_class=classes(80.0, 40.0))
    _row(tmp_path, 'sup_s1', experiment, [20] * 7, per_class=classes(82.0, 42.0))
    text = experiment.write_tables(tmp_path).read_text()
    section = _section(text, '## Per class: the teacher and the best student (`sup`)')
    assert '| class | teacher CEL | student CEL | teacher E | student E |' in section
    assert '| road | 90.0 | 81.0 | 10.0 | 41.0 |' in section
    assert 'wall' not in section          # scored in no subset: left out


def test_rows_and_their_sources(experiment):
    """L_sup-only students from their own initialisation read no teacher (they train while
    it does); every other student distils the committed fp16 teacher, which is also what the
    teacher row is evaluated from; the teacher trains twice the students' steps."""
    assert experiment.source('teacher') is None
    assert [experiment.source(r) for r in ('sup', 'sup_s1', 'sup_s2', 'sup_long')] == [None] * 4
    assert 'optim.steps=4500' in experiment.commands('sup_long', Args)[0]  # 3000 + 1500
    for r in ('full', 'full_tr_s2', 'full_init', 'sup_init', 'full_sum'):
        assert experiment.source(r) == 'teacher', r
        assert ('teacher.checkpoint=docs/results/weights/teacher.safetensors'
                in experiment.commands(r, Args)[0])
    assert not any('teacher.checkpoint' in a for a in experiment.commands('sup', Args)[0])
    train, evaluate = experiment.commands('teacher', Args)
    assert 'optim.steps=3000' in train and 'optim.warmup_steps=200' in train
    assert evaluate[evaluate.index('--checkpoint') + 1] == 'docs/results/weights/teacher.safetensors'
    assert 'loss.kl_reduction=sum' in experiment.commands('full_sum', Args)[0]
    assert 'loss.mad_pixels=teacher_correct' in experiment.commands('full_tr_s1', Args)[0]
    assert 'seed=2' in experiment.commands('full_s2', Args)[0]


def test_unknown_rows_are_refused(experiment, monkeypatch, capsys):
    monkeypatch.setattr('sys.argv', ['synthetic_experiment.py', '--rows', 'full,nonsense'])
    with pytest.raises(SystemExit):
        experiment.main()
    assert 'nonsense' in capsys.readouterr().err


def test_a_done_row_runs_again_only_when_needed_and_missing(tmp_path, experiment):
    """must_run: a row with its JSON is done. The published teacher is done for good once its
    fp16 weights are committed beside it; an unpublished row that rows still to train start
    from runs again when its checkpoint is gone (a new machine)."""
    class A(Args):
        runs, results = str(tmp_path / 'runs'), str(tmp_path / 'results')

    assert experiment.must_run('teacher', A, needed=False)          # no JSON yet
    Path(A.results).mkdir()
    for name in ('teacher', 'sup'):
        (Path(A.results) / f'{name}.json').write_text(
            json.dumps({'key': experiment.row_key(name, A)}))
    assert experiment.must_run('teacher', A, needed=False)          # weights not committed
    path = experiment.weights('teacher', A)
    path.parent.mkdir()
    path.write_bytes(b'')
    key = path.with_name(path.name + '.key')
    key.write_text('0123456789ab\n')                                # weights of other commands
    assert experiment.must_run('teacher', A, needed=True)
    key.write_text(experiment.row_key('teacher', A) + '\n')
    assert not experiment.must_run('teacher', A, needed=True)       # no checkpoint in runs/
    assert not experiment.must_run('sup', A, needed=False)
    assert experiment.must_run('sup', A, needed=True)
    (Path(A.runs) / 'sup').mkdir(parents=True)
    (Path(A.runs) / 'sup' / 'final.safetensors').write_bytes(b'')
    assert not experiment.must_run('sup', A, needed=True)


def test_a_row_key_follows_the_figures_not_the_interpreter(experiment, monkeypatch):
    class A(Args):
        pass

    key = experiment.row_key('full', A)
    monkeypatch.setattr(experiment, 'PY', '/elsewhere/.venv/bin/python')
    assert experiment.row_key('full', A) == key
    A.cache = '/tmp/other-cache'
    assert experiment.row_key('full', A) == key
    A.steps = 1000
    assert experiment.row_key('full', A) != key
    A.steps = 1500
    assert len({experiment.row_key(r, A) for r in experiment.ROWS}) == len(experiment.ROWS)


def test_rows_start_when_their_source_is_done_and_share_the_cores(experiment, monkeypatch):
    """run_rows: a student starts as soon as its teacher is done, while an L_sup-only row
    still trains; never more than --jobs rows at a time, never more threads than cores; a row
    whose source failed is not run."""
    import threading
    lock, log, running = threading.Lock(), [], {}
    student_started = threading.Event()

    def fake_run_row(name, args, needed=False, env=None):
        threads = int(env['OMP_NUM_THREADS'])
        with lock:
            running[name] = threads
            log.append(('start', name, threads, dict(running)))
        if name == 'full':
            student_started.set()
        if name == 'sup':  # slow: still training when the teacher's students start
            assert student_started.wait(10), 'the student waited for the L_sup-only row'
        if name == 'full_tr':
            with lock:
                running.pop(name)
            raise experiment.RowFailed('boom')
        with lock:
            running.pop(name)
            log.append(('end', name, threads, dict(running)))

    monkeypatch.setattr(experiment, 'run_row', fake_run_row)
    monkeypatch.setattr(experiment, 'is_done', lambda name, args: False)
    # the teacher is done: its students start without training it
    monkeypatch.setattr(experiment, 'must_run', lambda name, args, needed: name != 'teacher')
    monkeypatch.setattr(experiment.os, 'cpu_count', lambda: 2)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setitem(experiment.SOURCES, 'full_tr_s1', 'full_tr')  # its source will fail

    class A:
        jobs, runs, no_cache, cache = 2, 'R', True, None

    failed = experiment.run_rows(['sup', 'teacher', 'full', 'full_tr', 'full_tr_s1'], A)
    assert sorted(failed) == ['full_tr: boom', 'full_tr_s1: not run: full_tr failed']
    starts = [e for e in log if e[0] == 'start']
    at = {(kind, name): i for i, (kind, name, _, _) in enumerate(log)}
    for _, name, threads, now in starts:
        assert len(now) <= 2 and sum(now.values()) <= 2, (name, now)
        if experiment.source(name):
            assert at['end', experiment.source(name)] < at['start', name], name
    # the teacher is reported first; then the L_sup-only row and the first student train
    # together, on one core each
    assert [(n, t) for _, n, t, _ in starts[:3]] == [('teacher', 1), ('sup', 1), ('full', 1)]
    assert [n for _, n, _, _ in starts[3:]] == ['full_tr']


def test_training_minutes_sum_every_invocation(tmp_path, experiment):
    """A row's training time comes from its metrics.jsonl (steps x batch / samples per second,
    over every line, a resumed run's included), not from the last invocation's clock."""
    assert experiment.training_minutes(tmp_path) is None
    (tmp_path / 'config.yaml').write_text('optim:\n  batch_size: 8\n')
    lines = [{'step': 20, 'samples_per_s': 4.0}, {'step': 40, 'samples_per_s': 2.0},
             {'step': 100, 'samples_per_s': 8.0}]  # 40 s + 80 s + 60 s
    (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(x) + '\n' for x in lines))
    assert experiment.training_minutes(tmp_path) == 3.0
    damaged = tmp_path / 'damaged'
    damaged.mkdir()
    (damaged / 'config.yaml').write_text('optim:\n  batch_size: 8\n')
    (damaged / 'metrics.jsonl').write_text('{"step": 20, "samples_per_s": 4.0}\n{"step": 4')
    assert experiment.training_minutes(damaged) is None
    _row(tmp_path, 'teacher', experiment, TEACHER)
    row = json.loads((tmp_path / 'teacher.json').read_text())
    (tmp_path / 'teacher.json').write_text(json.dumps({**row, 'train_minutes': 3.0}))
    _row(tmp_path, 'sup', experiment, TEACHER)
    text = experiment.write_tables(tmp_path).read_text()
    assert '- teacher (3.0 min training):' in text
    assert '- sup (1.0 min in the invocation that finished it):' in text


def test_recorded_commands_name_no_interpreter_path(experiment, monkeypatch):
    """Rows record ``python -m ...``, runnable in any clone, not this machine's interpreter."""
    monkeypatch.setattr(experiment, 'PY', '/elsewhere/.venv/bin/python')
    for cmd in experiment.commands('full_init', Args):
        assert cmd[0] == '/elsewhere/.venv/bin/python'  # what runs here
        assert experiment.portable(cmd) == ['python', *cmd[1:]]  # what the row records
    committed = sorted((experiment.REPO / 'docs' / 'results').glob('**/*.json'))
    assert committed
    for path in committed:
        for line in json.loads(path.read_text())['commands']:
            assert line.startswith('python -m anyseg_core.'), (path.name, line)


def test_a_revised_row_runs_again_and_its_old_figures_are_marked(tmp_path, experiment,
                                                                monkeypatch):
    class A(Args):
        results = str(tmp_path)

    monkeypatch.setattr(experiment, 'REVISIONS', {})
    key = experiment.row_key('sup', A)
    _row(tmp_path, 'sup', experiment, TEACHER)
    row = json.loads((tmp_path / 'sup.json').read_text())
    (tmp_path / 'sup.json').write_text(json.dumps({**row, 'key': key}))
    assert experiment.is_done('sup', A)
    assert '(earlier code' not in experiment.write_tables(tmp_path).read_text()
    monkeypatch.setattr(experiment, 'REVISIONS', {'sup': 'OHEM fixed'})
    assert experiment.row_key('sup', A) != key
    assert not experiment.is_done('sup', A)  # `make results` trains it again
    text = experiment.write_tables(tmp_path).read_text()
    assert f"| {row['label']} (earlier code in sup; to run again: OHEM fixed) |" in text
    # the row written by the new code carries its revision and is no longer marked
    (tmp_path / 'sup.json').write_text(json.dumps({**row, 'revision': 'OHEM fixed'}))
    assert '(earlier code' not in experiment.write_tables(tmp_path).read_text()


def test_run_row_publishes_the_teacher_and_keeps_the_logs(tmp_path, experiment, monkeypatch):
    """run_row with the commands faked: the teacher is trained, exported to its committed fp16
    file and evaluated from that file; its JSON, metrics and command log land in --results;
    a student distils the committed file and records the teacher's figures from its JSON."""
    class A(Args):
        runs, results = str(tmp_path / 'runs'), str(tmp_path / 'results')

    report = {'subsets': {s: {'miou': 10.0 + i, 'iou': {'road': 50.0}}
                          for i, s in enumerate(SUBSETS)},
              'mean_miou': 13.0, 'worst_miou': 10.0, 'worst_subset': 'C', 'protocol': {}}
    ran = []

    def fake_run(cmd, log, env=None):
        ran.append(cmd)
        module = cmd[2]
        if module == 'anyseg_core.train':
            out = Path(next(a.split('=', 1)[1] for a in cmd if a.startswith('out_dir=')))
            (out / 'final.safetensors').write_bytes(b'w')
            (out / 'metrics.jsonl').write_text('{"step": 1, "samples_per_s": 8.0}\n')
            (out / 'config.yaml').write_text('optim:\n  batch_size: 8\n')
        elif module == 'anyseg_core.export':
            Path(cmd[4]).write_bytes(b'fp16')
        else:
            out = Path(cmd[cmd.index('--out') + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / 'anymodal.json').write_text(json.dumps(report))
        with open(log, 'a') as f:
            f.write('$ ' + ' '.join(cmd) + '\n')

    monkeypatch.setattr(experiment, 'run', fake_run)
    experiment.run_row('teacher', A)
    weights = experiment.weights('teacher', A)
    assert weights.read_bytes() == b'fp16'
    assert (weights.parent / 'teacher.safetensors.key').read_text().strip() == \
        experiment.row_key('teacher', A)
    evaluate = ran[-1]
    assert evaluate[evaluate.index('--checkpoint') + 1] == str(weights)
    results = Path(A.results)
    row = json.loads((results / 'teacher.json').read_text())
    assert row['mean'] == 13.0 and row['per_class']['C'] == {'road': 50.0}
    assert (results / 'logs' / 'teacher.metrics.jsonl').exists()
    assert 'anyseg_core.export' in (results / 'logs' / 'teacher.log').read_text()
    assert not experiment.must_run('teacher', A, needed=True)  # never trained again
    ran.clear()
    experiment.run_row('full', A)
    assert f'teacher.checkpoint={weights}' in ran[0]
    full = json.loads((results / 'full.json').read_text())
    assert full['teacher']['mean'] == 13.0 and experiment.is_done('full', A)
    # the teacher trained again with other commands: its students are no longer done
    assert full['teacher_key'] == experiment.row_key('teacher', A)
    (results / 'full.json').write_text(json.dumps({**full, 'teacher_key': 'another'}))
    assert not experiment.is_done('full', A)


def test_the_report_carries_the_generated_main_table(tmp_path, experiment):
    """docs/results.md's main table is rewritten from the rows between its two markers; the
    text around them stays as written."""
    results = tmp_path / 'results'
    results.mkdir()
    report = tmp_path / 'results.md'
    report.write_text(f'# Results\nbefore\n{experiment.MAIN_START}\n| stale |\n'
                      f'{experiment.MAIN_END}\nafter\n')
    _tables(results, experiment, {'teacher': TEACHER, 'sup': [20] * 7})
    text = report.read_text()
    assert text.startswith('# Results\nbefore\n') and text.endswith('\nafter\n')
    table = text.split(experiment.MAIN_START)[1].split(experiment.MAIN_END)[0]
    assert '| stale |' not in table
    assert table.strip().splitlines()[0].startswith('| model | n | C |')
    assert '| PML teacher (mean fusion, every modality) | 1 | 10.00 |' in table
    assert len(table.strip().splitlines()) == 4
