"""scripts/cross_sensor_experiment.py: its rows' commands, keys and tables, and the real-frame
figures (KITTI boxes, the Cityscapes frame) through the node's inference path."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_module

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'scripts' / 'cross_sensor_experiment.py'
SUBSETS = ['C', 'E', 'L', 'CE', 'CL', 'EL', 'CEL']


@pytest.fixture(scope='module')
def xs():
    sys.path.insert(0, str(SCRIPT.parent))
    return load_module('cross_sensor_experiment', SCRIPT)


class Args:
    runs, results, steps, eval_samples, extra = 'runs/cross_sensor', 'docs/results/x', 1500, \
        200, []


def test_rows_are_sup_init_in_other_worlds_evaluated_on_every_rig(xs):
    from anyseg_core.data.synthetic.sensor_variants import rig_names
    assert set(xs.EVAL_RIGS) <= set(rig_names())
    keys = {xs.row_key(r, Args) for r in xs.ROWS}
    assert len(keys) == len(xs.ROWS)
    assert xs.commands('xs_muses', Args)['train'] is None  # sup_init's committed weights
    for name in xs.ROWS:
        cmds = [xs.base.portable(c) for c in xs.all_commands(name, Args)]
        assert all(' '.join(c).startswith('python -m anyseg_core.') for c in cmds)
        evaluate = xs.commands(name, Args)['evaluate']
        assert sorted(evaluate) == sorted(xs.EVAL_RIGS)
        for rig, cmd in evaluate.items():
            assert cmd[cmd.index('--rig') + 1] == rig
        train = xs.commands(name, Args)['train']
        if train:
            text = ' '.join(train)
            for s in ('model.init=teacher', 'loss.lambda_mad=0', 'optim.steps=1500',
                      'teacher.checkpoint=docs/results/weights/teacher.safetensors'):
                assert s in text
            assert 'data.cache' not in text  # it decides no figure
    assert 'data.rig=random' in ' '.join(xs.commands('xs_rand', Args)['train'])
    assert 'augment.lidar_intensity_p' not in ' '.join(xs.commands('xs_both', Args)['train'])
    assert Path(REPO / xs.SUP_INIT).is_file()


def test_tables_from_the_rows(tmp_path, xs):
    for i, name in enumerate(['xs_muses', 'xs_rand']):
        rigs = {}
        for j, rig in enumerate(xs.EVAL_RIGS):
            miou = {s: 10.0 + i + j for s in SUBSETS}
            rigs[rig] = {'miou': miou, 'mean': 10.0 + i + j, 'worst': 10.0, 'worst_subset': 'E'}
        row = {'row': name, 'label': xs.ROWS[name][0], 'key': 'k', 'commands': ['python -m x'],
               'rigs': rigs}
        if i == 1:
            row['real'] = {f'kitti_x{s}_{n}': {'car_in_boxes': 80.0, 'car_outside': 4.0,
                                               'road': 20.0}
                           for s in (255, 1) for n in ('C', 'L', 'CL')}
            row['real']['cityscapes_C'] = {'pixel_acc': 70.0, 'miou': 30.0, 'classes': 10}
            row['real'].update({f'kitti_aspect_x{s}_{n}': {'car_in_boxes': 90.0,
                                                          'car_outside': 3.0, 'road': 21.0}
                                for s in (255, 1) for n in ('C', 'L', 'CL')})
            row['real'].update(kitti_aspect_size=[128, 416], cityscapes_aspect_size=[128, 256],
                               cityscapes_aspect_C={'pixel_acc': 72.0, 'miou': 31.0,
                                                    'classes': 10})
        (tmp_path / f'{name}.json').write_text(json.dumps(row))
    text = xs.write_tables(tmp_path).read_text()
    mean = text.split('## Mean over the seven modality subsets')[1].split('##')[0]
    line = [ln for ln in mean.splitlines() if ln.startswith('| xs_rand')][0]
    # rigs 11..16; other rigs than muses: 12..16, mean 14
    assert line.endswith('| 11.00 | 12.00 | 13.00 | 14.00 | 15.00 | 16.00 | **14.00** |')
    assert '| xs_rand | 80 / 4 / 20 |' in text and '| 70.0 | 30.0 |' in text
    assert '| xs_rand | 90 / 3 / 21 |' in text and '| 72.0 | 31.0 |' in text
    assert '(KITTI 128x416, Cityscapes 128x256;' in text
    later = [r for r in xs.ROWS if r not in ('xs_muses', 'xs_rand')]
    assert f"Rows not run yet: {', '.join(later)}." in text


def test_real_frames_through_the_runtime(xs, tiny_teacher):
    if not (xs.REAL / 'kitti_000008').is_dir():
        pytest.skip(f'real-data folder is missing: {xs.REAL}')
    frame, boxes = xs.kitti_frame(255.0)
    assert frame.camera.shape == (375, 1242, 3) and boxes.shape == (375, 1242)
    assert 0.05 < boxes.mean() < 0.5
    unit, _ = xs.kitti_frame(1.0)
    np.testing.assert_allclose(frame.lidar[:, 3], 255 * unit.lidar[:, 3], rtol=1e-6)
    out = xs.evaluate_real(str(tiny_teacher))
    assert out['input_size'] == [64, 96]  # the checkpoint's own, the node's default
    for key in ('kitti_x255_C', 'kitti_x255_L', 'kitti_x255_CL', 'kitti_x1_L', 'kitti_x1_CL'):
        assert all(0 <= v <= 100 for v in out[key].values())
    assert 'kitti_x1_C' not in out
    # The same at the width that keeps each image's aspect ratio, at the checkpoint's height.
    assert out['kitti_aspect_size'] == [64, 224] and out['cityscapes_aspect_size'] == [64, 128]
    for key in ('kitti_aspect_x255_C', 'kitti_aspect_x1_CL'):
        assert all(0 <= v <= 100 for v in out[key].values())
    assert 0 <= out['cityscapes_aspect_C']['pixel_acc'] <= 100
    city = out['cityscapes_C']
    assert 0 <= city['pixel_acc'] <= 100 and 0 <= city['miou'] <= 100 and city['classes'] > 3


def test_the_tables_are_copied_into_the_report_between_its_markers(tmp_path, xs):
    results = tmp_path / 'docs' / 'results' / 'cross_sensor'
    results.mkdir(parents=True)
    report = tmp_path / 'docs' / 'results.md'
    marks = {w: (f'<!-- cross-sensor {w} table: written by scripts/cross_sensor_experiment.py '
                 f'-->', f'<!-- end of the cross-sensor {w} table -->')
             for w in ('synthetic', 'real', 'aspect')}
    report.write_text('# R\n' + '\n'.join(f'{a}\n| old |\n{b}\ntext {w}' for w, (a, b)
                                          in marks.items()) + '\n')
    test_tables_from_the_rows(results, xs)  # writes two rows and the tables
    text = report.read_text()
    assert '| old |' not in text and all(f'text {w}' in text for w in marks)
    synthetic = text.split(marks['synthetic'][0])[1].split(marks['synthetic'][1])[0]
    assert synthetic.strip().splitlines()[0].startswith('| row | muses | hdl64')
    assert '| xs_rand: ' in synthetic and '80 / 4 / 20' not in synthetic
    real = text.split(marks['real'][0])[1].split(marks['real'][1])[0]
    assert '| xs_rand | 80 / 4 / 20 |' in real and '90 / 3 / 21' not in real
    aspect = text.split(marks['aspect'][0])[1].split(marks['aspect'][1])[0]
    assert aspect.strip().splitlines()[0].startswith('| row | KITTI C |')
    assert '| xs_rand | 90 / 3 / 21 |' in aspect and '80 / 4 / 20' not in aspect
