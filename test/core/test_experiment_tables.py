"""The report of scripts/synthetic_experiment.py: tables generated from the rows' JSONs, and
the issue's targets judged from the figures (not written by hand)."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / 'scripts' / 'synthetic_experiment.py'
SUBSETS = ['C', 'E', 'L', 'CE', 'CL', 'EL', 'CEL']


@pytest.fixture(scope='module')
def experiment():
    spec = importlib.util.spec_from_file_location('synthetic_experiment', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figures(miou: dict) -> dict:
    worst = min(miou, key=miou.get)
    return {'miou': miou, 'mean': sum(miou.values()) / len(miou), 'worst': miou[worst],
            'worst_subset': worst}


def _row(results: Path, name: str, experiment, miou: dict, teacher: dict = None) -> None:
    row = {'row': name, 'label': experiment.ROWS[name][0], 'key': 'k', 'minutes': 1.0,
           'commands': [f'train {name}', f'evaluate {name}'], **_figures(miou), 'protocol': {}}
    if teacher is not None:
        row['teacher'] = _figures(teacher)
    (results / f'{name}.json').write_text(json.dumps(row))


def _tables(tmp_path: Path, experiment, rows: list) -> str:
    """Write ``(name, mIoU per subset, its teacher's or None)`` rows, return tables.md."""
    for name, miou, teacher in rows:
        _row(tmp_path, name, experiment, dict(zip(SUBSETS, miou)),
             teacher=None if teacher is None else dict(zip(SUBSETS, teacher)))
    return experiment.write_tables(tmp_path).read_text()


TEACHER = [10, 2, 20, 12, 28, 22, 30]   # mean 17.71, worst 2


def _target_lines(text: str, student: str) -> list[str]:
    section = text.split(f'## Targets ({student} student vs the PML teacher')[1]
    return [line for line in section.split('##')[0].splitlines() if line.startswith('| ')][1:]


def test_targets_are_judged_from_the_figures(tmp_path, experiment):
    teacher = dict(zip(SUBSETS, [10, 2, 20, 12, 28, 22, 30]))   # mean 17.71, worst 2
    # Meets all three: mean +5.5, worst +10 (12 vs 2), CEL -1.5.
    good = dict(zip(SUBSETS, [22, 12, 22, 24, 28, 26, 28.5]))
    # Meets none: mean +0.5, worst +9.9, CEL -2.1.
    bad = dict(zip(SUBSETS, [13, 11.9, 20, 14, 21, 20, 27.9]))
    _row(tmp_path, 'teacher', experiment, teacher)
    _row(tmp_path, 'full_init', experiment, good, teacher=teacher)
    _row(tmp_path, 'full', experiment, bad)
    text = experiment.write_tables(tmp_path).read_text()

    met = [line.rstrip(' |').rsplit('| ', 1)[1] for line in _target_lines(text, 'full_init')]
    assert met == ['yes', 'yes', 'yes']
    met = [line.rstrip(' |').rsplit('| ', 1)[1] for line in _target_lines(text, 'full')]
    assert met == ['no', 'no', 'no']
    # Every row present appears in the Table 1 shape with its figures and its commands.
    assert '| 22.00 | 12.00 | 22.00 | 24.00 | 28.00 | 26.00 | 28.50 |' in text
    assert 'train full_init' in text and 'evaluate teacher' in text
    # The initialisation comparison needs both students of a pair.
    assert 'AnySeg, all three losses | teacher' in text
    assert '| L_sup only | backbone' not in text
    assert 'Rows not run yet:' in text and 'sup_init' in text.split('Rows not run yet:')[1]
    assert '## Peak learning rate' not in text


def test_learning_rate_comparison_and_targets_of_every_full_student(tmp_path, experiment):
    text = _tables(tmp_path, experiment, [
        ('teacher', TEACHER, None),
        ('full_init', [22, 12, 22, 24, 28, 26, 27.0], TEACHER),
        ('full_init_lr', [21, 12.5, 22, 23, 28, 26, 29.0], TEACHER)])
    section = text.split('## Peak learning rate')[1].split('##')[0]
    assert '| 4e-4 | 23.00 | 12.00 | 27.00 |' in section
    assert '| 1e-4 | 23.07 | 12.50 | 29.00 |' in section
    cel = [ln for ln in _target_lines(text, 'full_init_lr') if 'all modalities' in ln][0]
    assert '| 30.00 | 29.00 | -1.00 | yes |' in cel
    assert '## Student initialisation' not in text   # no complete pair
    # The rows of a group that have run (here two of three) are shown; full_init_lr2 is not.
    assert '| 2e-4 |' not in section


def test_distillation_weight_comparison(tmp_path, experiment):
    text = _tables(tmp_path, experiment, [('teacher', TEACHER, None),
                                          ('sup_init', [20] * 7, TEACHER)])
    assert '## Distillation weights' not in text    # one row of the group: nothing to compare
    text = _tables(tmp_path, experiment, [('full_init_light', [21] * 7, TEACHER)])
    section = text.split('## Distillation weights')[1].split('##')[0]
    assert '| 0, 0, 0 | 20.00 |' in section and '| 5, 0.5, 1 | 21.00 |' in section
    assert '| 50, 5, 10 |' not in section
    assert '## Targets (full_init_light student' in text
    assert '## Targets (sup_init' not in text       # targets are for the full method only


def test_unknown_rows_are_refused(experiment, monkeypatch, capsys):
    monkeypatch.setattr('sys.argv', ['synthetic_experiment.py', '--rows', 'full,nonsense'])
    with pytest.raises(SystemExit):
        experiment.main()
    assert 'nonsense' in capsys.readouterr().err


def test_students_are_judged_against_their_own_teacher(tmp_path, experiment):
    """A student distilled from a teacher trained again (a new machine) is compared with that
    teacher's figures, which get their own row; the first teacher's row stays."""
    again = [11, 3, 21, 13, 29, 23, 33]
    student = [22, 12, 22, 24, 28, 26, 30.5]
    text = _tables(tmp_path, experiment, [('teacher', TEACHER, None),
                                          ('full', student, TEACHER),
                                          ('full_init', student, again)])
    table1 = text.split('## Table 1 shape')[1].split('##')[0]
    assert '| 10.00 | 2.00 | 20.00 |' in table1
    retrained = [line for line in table1.splitlines() if 'trained again' in line]
    assert len(retrained) == 1 and '(the teacher of full_init)' in retrained[0]
    assert '| 11.00 | 3.00 | 21.00 |' in retrained[0]
    # Same student figures: CEL is within 2 of the first teacher (30.5 vs 30), not of the
    # second (30.5 vs 33).
    cel = lambda s: [ln for ln in _target_lines(text, s) if 'all modalities' in ln][0]  # noqa: E731
    assert '| 30.00 | 30.50 | +0.50 | yes |' in cel('full')
    assert '| 33.00 | 30.50 | -2.50 | no |' in cel('full_init')


def test_rows_trained_from_the_longer_trained_teacher(tmp_path, experiment):
    """teacher_long starts from the teacher's checkpoint and its students from teacher_long's;
    they are judged against teacher_long, not taken for a rerun of the teacher."""
    class Args:
        runs, steps, eval_samples, cache, no_cache = 'R', 1500, 200, None, True

    long_cmd = experiment.commands('teacher_long', Args)[0]
    assert 'model.init=teacher' in long_cmd and 'stage=student' not in long_cmd
    assert 'teacher.checkpoint=R/teacher/final.safetensors' in long_cmd
    assert ('teacher.checkpoint=R/teacher_long/final.safetensors'
            in experiment.commands('full_init_tl', Args)[0])
    assert [experiment.source(r) for r in ('teacher', 'full', 'teacher_long', 'full_init_tl')] \
        == [None, 'teacher', 'teacher', 'teacher_long']
    longer = [12, 4, 22, 14, 30, 24, 34]
    text = _tables(tmp_path, experiment, [('teacher', TEACHER, None),
                                          ('teacher_long', longer, None),
                                          ('full_init_tl', [22, 14, 22, 24, 28, 26, 33], longer)])
    assert 'trained again with the same command' not in text
    section = text.split('## Targets (full_init_tl student vs the teacher_long row it was '
                         'distilled from)')[1].split('##')[0]
    assert '| 34.00 | 33.00 | -1.00 | yes |' in section
    steps = text.split("## Teacher trained for 1500 steps")[1].split('##')[0]
    assert '| PML teacher | 1500 + 1500 |' in steps


def test_a_done_row_runs_again_only_when_needed_and_missing(tmp_path, experiment):
    """must_run: a row with its JSON is done, unless rows still to train start from it and
    its checkpoint or evaluation is gone (a new machine)."""
    class Args:
        runs, results = str(tmp_path / 'runs'), str(tmp_path / 'results')
        steps, eval_samples, cache, no_cache = 1500, 200, None, False

    assert experiment.must_run('teacher', Args, needed=False)          # no JSON yet
    Path(Args.results).mkdir()
    (Path(Args.results) / 'teacher.json').write_text(
        json.dumps({'key': experiment.row_key('teacher', Args)}))
    assert not experiment.must_run('teacher', Args, needed=False)
    assert experiment.must_run('teacher', Args, needed=True)           # checkpoint missing
    out = Path(Args.runs) / 'teacher'
    (out / 'eval').mkdir(parents=True)
    (out / 'final.safetensors').write_bytes(b'')
    (out / 'eval' / 'anymodal.json').write_text('{}')
    assert not experiment.must_run('teacher', Args, needed=True)


def test_a_row_key_follows_the_figures_not_the_interpreter(experiment, monkeypatch):
    class Args:
        runs, results = 'runs/experiment', 'docs/results'
        steps, eval_samples, cache, no_cache = 1500, 200, None, False

    key = experiment.row_key('full_init_tl', Args)
    monkeypatch.setattr(experiment, 'PY', '/elsewhere/.venv/bin/python')
    assert experiment.row_key('full_init_tl', Args) == key
    Args.cache = '/tmp/other-cache'
    assert experiment.row_key('full_init_tl', Args) == key
    Args.steps = 1000
    assert experiment.row_key('full_init_tl', Args) != key
    # A row of STEP_FACTORS trains a multiple of --steps, so its key is not its twin's.
    Args.steps = 1500
    assert experiment.row_key('full_init_tl_long', Args) != key
    train = experiment.commands('full_init_tl_long', Args)[0]
    assert 'optim.steps=3000' in train and 'optim.warmup_steps=200' in train


def test_rows_start_when_their_source_is_done_and_share_the_cores(experiment, monkeypatch):
    """run_rows: a student starts as soon as its teacher is done, while the baseline still
    trains; never more than --jobs rows at a time, never more threads than cores; a row whose
    source failed is not run."""
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
        if name == 'baseline':  # slow: still training when the teacher's students start
            assert student_started.wait(10), 'the student waited for the baseline'
        if name == 'mad':
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
    monkeypatch.setitem(experiment.SOURCES, 'umd', 'mad')  # a row whose source will fail

    class Args:
        jobs, runs, no_cache, cache = 2, 'R', True, None

    failed = experiment.run_rows(['baseline', 'teacher', 'full', 'mad', 'umd'], Args)
    assert sorted(failed) == ['mad: boom', 'umd: not run: mad failed']
    starts = [e for e in log if e[0] == 'start']
    at = {(kind, name): i for i, (kind, name, _, _) in enumerate(log)}
    for _, name, threads, now in starts:
        assert len(now) <= 2 and sum(now.values()) <= 2, (name, now)
        if experiment.source(name):
            assert at['end', experiment.source(name)] < at['start', name], name
    # the teacher is reported first; then the baseline and the first student train together,
    # on one core each
    assert [(n, t) for _, n, t, _ in starts[:3]] == [('teacher', 1), ('baseline', 1),
                                                    ('full', 1)]
    assert [n for _, n, _, _ in starts[3:]] == ['mad']  # on 1 or 2 cores: whatever is free


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
    _row(tmp_path, 'teacher', experiment, dict(zip(SUBSETS, TEACHER)))
    row = json.loads((tmp_path / 'teacher.json').read_text())
    (tmp_path / 'teacher.json').write_text(json.dumps({**row, 'train_minutes': 3.0}))
    _row(tmp_path, 'baseline', experiment, dict(zip(SUBSETS, TEACHER)))
    text = experiment.write_tables(tmp_path).read_text()
    assert '- teacher (3.0 min training):' in text
    assert '- baseline (1.0 min in the invocation that finished it):' in text


def test_recorded_commands_name_no_interpreter_path(experiment, monkeypatch):
    """Rows record ``python -m ...``, runnable in any clone, not this machine's interpreter."""
    monkeypatch.setattr(experiment, 'PY', '/elsewhere/.venv/bin/python')

    class Args:
        runs, results = 'runs/experiment', 'docs/results'
        steps, eval_samples, cache, no_cache = 1500, 200, None, False

    for cmd in experiment.commands('full_init_tl', Args):
        assert cmd[0] == '/elsewhere/.venv/bin/python'  # what runs here
        assert experiment.portable(cmd) == ['python', *cmd[1:]]  # what the row records
    committed = sorted((experiment.REPO / 'docs' / 'results').glob('*.json'))
    assert committed
    for path in committed:
        for line in json.loads(path.read_text())['commands']:
            assert line.startswith('python -m anyseg_core.'), (path.name, line)


def test_a_revised_row_runs_again_and_its_old_figures_are_marked(tmp_path, experiment,
                                                                monkeypatch):
    class Args:
        runs, results = 'runs/experiment', str(tmp_path)
        steps, eval_samples, cache, no_cache = 1500, 200, None, False

    monkeypatch.setattr(experiment, 'REVISIONS', {})
    key = experiment.row_key('baseline', Args)
    _row(tmp_path, 'baseline', experiment, dict(zip(SUBSETS, TEACHER)))
    row = json.loads((tmp_path / 'baseline.json').read_text())
    (tmp_path / 'baseline.json').write_text(json.dumps({**row, 'key': key}))
    assert experiment.is_done('baseline', Args)
    assert '(earlier code' not in experiment.write_tables(tmp_path).read_text()
    monkeypatch.setattr(experiment, 'REVISIONS', {'baseline': 'fusion fixed'})
    assert experiment.row_key('baseline', Args) != key
    assert not experiment.is_done('baseline', Args)  # `make results` trains it again
    text = experiment.write_tables(tmp_path).read_text()
    assert f"| {row['label']} (earlier code; to run again: fusion fixed) |" in text
    # the row written by the new code carries its revision and is no longer marked
    (tmp_path / 'baseline.json').write_text(json.dumps({**row, 'revision': 'fusion fixed'}))
    assert '(earlier code' not in experiment.write_tables(tmp_path).read_text()
