"""What the review page says names paths relative to the data root, never the server's
absolute paths (issue 24, point 4): case errors, refusals, a failed run's error, summaries."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from oncoseg.errors import InputError
from oncoseg.verbs import phantom


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A data root reached through a symbolic link (the server started on the link, the
    messages of lower layers naming the resolved folder): a rectal case, a corrupt volume, a
    cohort case whose result names an input outside the root, a model file that is not one."""
    base = tmp_path_factory.mktemp("messages")
    real = base / "real-root"
    phantom("rectal", real / "rectal", cases=1, seed=5)
    (real / "broken").mkdir()
    (real / "broken" / "t2w.nii.gz").write_bytes(b"not a NIfTI file")
    case = real / "runs" / "cases" / "case_x"
    case.mkdir(parents=True)
    (case / "result.json").write_text(json.dumps(
        {"inputs": {"t2w": str(base / "elsewhere" / "t2w.nii.gz")}}))
    (real / "runs" / "cohort.csv").write_text("case_id,status\ncase_x,done\n")
    (real / "runs" / "cohort.json").write_text("{}")
    (real / "models").mkdir()
    (real / "models" / "bad.safetensors").write_bytes(b"\x00" * 64)
    link = base / "root-link"
    link.symlink_to(real, target_is_directory=True)
    return link, real


def absolute_forms(link, real) -> list[str]:
    return [str(link), str(real), str(real.parent)]


def assert_relative(text: str, link, real) -> None:
    for form in absolute_forms(link, real):
        assert form not in text, text


def test_relative_paths_keeps_sentences_and_cuts_other_absolute_paths(tmp_path):
    from OncoSegWebLib.security import relative_paths

    root = tmp_path / "data root"  # a space in the root's name
    assert relative_paths(f"cannot read {root}/case 1/t2w.nii.gz (bad)", root) == \
        "cannot read case 1/t2w.nii.gz (bad)"
    assert relative_paths(f"[Errno 2] No such file: '{root}/a/b.nii'", root) == \
        "[Errno 2] No such file: 'a/b.nii'"
    assert relative_paths(f"{root} is empty", root) == ". is empty"
    assert relative_paths("model /opt/oncoseg/data/models/rectal-demo.safetensors refused",
                          root) == "model .../rectal-demo.safetensors refused"
    assert relative_paths(r"C:\Users\me\scan.nii is bad", root) == ".../scan.nii is bad"
    for sentence in ("ratio 1/2, and/or a /s", "P(T3) 0.52 / threshold 0.5", "case_x/t2w"):
        assert relative_paths(sentence, root) == sentence
    # a sibling whose name starts with the root's is not the root
    assert str(tmp_path) not in relative_paths(f"{root}x/other.nii", root)


def test_session_errors_name_paths_relative_to_the_data_root(served, mrml):
    from OncoSegWebLib.session import ReviewSession

    link, real = served
    session = ReviewSession(mrml, link)
    cases = {c.id: c for c in session.cases()}
    assert "t2w.nii.gz cannot be read" in cases["broken"].error
    assert cases["runs/cases/case_x"].error  # its input lies outside the root
    for case in cases.values():
        assert_relative(case.error, link, real)
    # a refusal of a path outside the root, given absolute, does not echo the root either
    with pytest.raises(InputError) as refused:
        session.open_case(str(real.parent / "elsewhere"))
    assert "outside the data root" in session.message(refused.value)
    assert_relative(session.message(refused.value), link, real)
    # a run with a model file that is not one: the error below names the file by its path
    session.open_case("rectal/rectal_000")
    with pytest.raises(Exception) as failed:
        session.run("rectal", "models/bad.safetensors", device="cpu")
    assert str(real / "models" / "bad.safetensors") in str(failed.value)  # the engine's words
    shown = session.message(failed.value)
    assert_relative(shown, link, real)
    assert shown.startswith("models/bad.safetensors: ")


def test_the_page_shows_only_relative_paths(served, mrml):
    """The app's own handlers (no browser: the page's state is a namespace) put every message
    through the session: a corrupt case, a refused model path, a list of case errors."""
    from OncoSegWebLib.app import ReviewApp
    from OncoSegWebLib.session import ReviewSession

    link, real = served
    page = SimpleNamespace(session=ReviewSession(mrml, link), worker=None, device="cpu",
                           state=SimpleNamespace(case_id="broken"))
    page._say = lambda message, kind="info": ReviewApp._say(page, message, kind)
    ReviewApp.refresh_cases(page)
    assert any(e.startswith("broken: ") for e in page.state.case_errors)
    for error in page.state.case_errors:
        assert_relative(error, link, real)
    ReviewApp.open_case(page)
    assert page.state.message_kind == "error" and "cannot be read" in page.state.message
    assert_relative(page.state.message, link, real)
    page._say(f"Failed: cannot read {real}/rectal/rectal_000/t2w.nii.gz")
    assert page.state.message == "Failed: cannot read rectal/rectal_000/t2w.nii.gz"
    page._say(f"Failed: cannot read {link}/rectal/rectal_000/t2w.nii.gz")
    assert page.state.message == "Failed: cannot read rectal/rectal_000/t2w.nii.gz"


def test_opening_a_case_shows_how_its_volumes_were_read(served, mrml):
    """A NIfTI volume whose sform mirrors its qform is shown as ITK places it (what Slicer
    shows), and the page says so when the case opens, as `predict` does."""
    import shutil

    pytest.importorskip("nibabel")
    from nifti_placements import with_mirrored_sform

    from OncoSegWebLib.app import ReviewApp
    from OncoSegWebLib.session import ReviewSession

    link, real = served
    case = real / "placed" / "rectal_000"
    shutil.copytree(real / "rectal" / "rectal_000", case)
    with_mirrored_sform(real / "rectal" / "rectal_000" / "t2w.nii.gz", case / "t2w.nii.gz")

    views = SimpleNamespace(display_manager=SimpleNamespace(
        show_volume_in_slice_background=lambda node: None,
        show_volume_in_slice_foreground=lambda node: None, reset_views=lambda: None))
    page = SimpleNamespace(session=ReviewSession(mrml, link), worker=None, device="cpu",
                           slicer=views, state=SimpleNamespace(case_id="placed/rectal_000"),
                           _clear_result=lambda: None)
    page._say = lambda message, kind="info": ReviewApp._say(page, message, kind)
    ReviewApp.open_case(page)
    assert page.state.message_kind == "warning"
    assert page.state.message.startswith("Opened placed/rectal_000: ")
    assert "Note: t2w: t2w.nii.gz is placed differently by different tools" in page.state.message
    assert "left and right swapped" in page.state.message
    assert_relative(page.state.message, link, real)
    # another case opened after it says nothing of the kind
    page.state.case_id = "rectal/rectal_000"
    ReviewApp.open_case(page)
    assert page.state.message_kind == "info" and "Note" not in page.state.message
