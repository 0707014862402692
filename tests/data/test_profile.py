"""A scan far from a model's training scans is named with the reason; one like them is not."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nibabel as nib
import numpy as np

from sfda.cli import main
from sfda.config.card import Profile
from sfda.data.profile import unfamiliar

PROFILE = Profile(modality="opp", spacing=((2.0, 1.25, 1.25), (2.0, 1.25, 1.25)),
                  shape=((35, 35, 25), (35, 35, 25)), intensity=(0.0, 500.0))


def test_a_scan_like_the_training_scans_is_familiar():
    assert unfamiliar(PROFILE, (2.0, 1.25, 1.25), (36, 30, 25), [(0.0, 480.0)], "opp") == []
    assert unfamiliar(None, (9, 9, 9), (1, 1, 1), [(0, 1)]) == []  # no profile (imported model): nothing to say


def test_an_abdominal_mr_scan_is_far_from_a_spine_crop_model_and_says_why():
    why = unfamiliar(PROFILE, (1.25, 1.25, 7.7), (256, 256, 40), [(0.0, 2600.0)], "T2SPIR")
    assert len(why) == 4
    assert why[0].startswith("voxel spacing 1.25 x 1.25 x 7.7 mm (training: 2 x 1.25 x 1.25")
    assert why[1].startswith("size 256 x 256 x 40")
    assert why[2] == "intensities 0 to 2600 (training: 0 to 500)"
    assert why[3] == "modality 'T2SPIR' (training: 'opp')"


def test_the_limits_are_a_factor_of_two_and_half_the_intensities():
    assert unfamiliar(PROFILE, (4.0, 2.5, 2.5), (70, 70, 50), [(0, 500)]) == []  # exactly twice: still familiar
    assert len(unfamiliar(PROFILE, (4.1, 1.25, 1.25), (35, 35, 25), [(0, 500)])) == 1
    assert unfamiliar(PROFILE, (2, 1.25, 1.25), (35, 35, 25), [(200, 600)]) == []  # overlaps 300 of 400
    assert len(unfamiliar(PROFILE, (2, 1.25, 1.25), (35, 35, 25), [(400, 900)])) == 1  # overlaps 100 of 500


def test_each_channel_is_checked_against_its_own_training_range():
    two = Profile(modality="T2+ADC", spacing=PROFILE.spacing, shape=PROFILE.shape, intensity=(0.0, 500.0),
                  channels=((0.0, 500.0), (0.0, 3000.0)))
    assert unfamiliar(two, (2, 1.25, 1.25), (35, 35, 25), [(0, 480), (0, 2900)]) == []
    why = unfamiliar(two, (2, 1.25, 1.25), (35, 35, 25), [(0, 480), (0, 300)])  # ADC ten times narrower
    assert why == ["intensities of channel 1 0 to 300 (training: 0 to 3000)"]
    # a checkpoint written before profiles held every channel checks the first one only
    assert unfamiliar(PROFILE, (2, 1.25, 1.25), (35, 35, 25), [(0, 480), (0, 300)]) == []


def test_a_two_channel_training_profile_holds_each_channels_range(tmp_path):
    from sfda.data.profile import training_profile
    from sfda.io.cases import Case

    cases = []
    for i, scale in enumerate((1.0, 2.0)):
        files = {}
        for name, top in (("T2", 500.0), ("ADC", 3000.0)):
            path = tmp_path / f"c{i}_{name}.nii.gz"
            nib.save(nib.Nifti1Image(np.linspace(0, top * scale, 60, dtype=np.float32).reshape(3, 4, 5),
                                     np.eye(4)), path)
            files[name] = str(path)
        cases.append(Case(case_id=f"c{i}", subject=f"c{i}", images=files, label=None, shape=(3, 4, 5),
                          spacing=(1.0, 1.0, 1.0)))
    profile = training_profile(cases, "T2+ADC")
    assert profile.intensity == (0.0, 1000.0)
    assert profile.channels == ((0.0, 1000.0), (0.0, 6000.0))
    assert training_profile(cases, "T2").channels == ()


def test_predict_warns_about_a_far_scan_and_not_about_its_own(tiny_source, tiny_cases, tmp_path):
    checkpoint, _ = tiny_source
    own = next((Path(tiny_cases).parent / "data").rglob("P03_wat.nii.gz"))
    img = nib.load(own)
    far = tmp_path / "far.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * 1000, np.diag([9.0, 9.0, 9.0, 1.0])), far)
    said = io.StringIO()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(said):
        assert main(["predict", "--checkpoint", checkpoint, str(own), str(far), "--out", str(tmp_path / "o")]) == 0
    warned = [line for line in said.getvalue().splitlines() if "far from the model's training scans" in line]
    assert len(warned) == 2 and all(line.startswith("warning: far.nii.gz") for line in warned), warned
    assert "voxel spacing 9 x 9 x 9 mm" in warned[0] and "intensities" in warned[1]
