"""The labelling page (`facegen-train label-ui`) in a real headless browser: label with the
keyboard, reload, two tabs; the sheet on disk; and the attribute training's partial-sheet rule."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from services.shared.conditions import CONDITIONS
from services.shared.labels import complete, read_hand_labels
from tests.browser import screenshot
from tests.servers import REPO, free_port

N = 5


@pytest.fixture(scope="module")
def dataset(synth_root, tmp_path_factory):
    """The procedural set without its hand labels or ground truth: the model's suggestions show."""
    root = tmp_path_factory.mktemp("labelling") / "ds"
    shutil.copytree(synth_root, root)
    (root / "hand_labels.csv").unlink()
    (root / "labels.csv").unlink()
    return root


@pytest.fixture(scope="module")
def server(dataset):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "label-ui", "--data", str(dataset), "--n", str(N),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"label-ui exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/api/sheet", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise TimeoutError("label-ui did not start")
    yield url
    proc.terminate()
    proc.wait(10)


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    return page


def _sliders(page) -> dict[str, float]:
    return {c: float(page.locator(f"#slider-{c}").input_value()) for c in CONDITIONS}


def test_label_with_the_keyboard_reload_and_two_tabs(browser, server, dataset):
    page = _open(browser, server)
    assert page.inner_text("#progress-text") == f"0 / {N} labelled"
    assert page.inner_text("#position") == f"1 / {N}"
    assert "suggested by model" in page.inner_text("#state")
    assert page.eval_on_selector("#image", "e => e.complete && e.naturalWidth") == 64
    first = sorted(p.name for p in (dataset / "Female").iterdir())[0]
    assert page.inner_text("#file").endswith(first)
    labelled = {}
    for k in range(3):
        before = _sliders(page)
        page.keyboard.press("1")  # eyes
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("5")  # head
        page.keyboard.press("Shift+ArrowLeft")
        values = _sliders(page)
        assert values["eyes"] == pytest.approx(min(1.0, before["eyes"] + 0.10), abs=0.011)
        assert values["head"] == pytest.approx(max(0.0, before["head"] - 0.01), abs=0.011)
        labelled[page.inner_text("#file")] = values
        page.keyboard.press("Enter")
        page.wait_for_function(f"document.getElementById('position').textContent === '{k + 2} / {N}'")
    assert page.inner_text("#progress-text") == f"3 / {N} labelled"

    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("#progress-text") == f"3 / {N} labelled"
    assert page.inner_text("#position") == f"4 / {N}"  # resumes at the first image not labelled
    page.keyboard.press("[")
    assert page.inner_text("#state") == "labelled"
    assert _sliders(page) == pytest.approx(labelled[page.inner_text("#file")])

    rows = read_hand_labels(dataset / "hand_labels.csv")
    assert len(rows) == N  # every sheet image has a row, blank until labelled
    done = complete(rows)
    assert set(done) == set(labelled)
    for f, values in labelled.items():
        assert done[f] == pytest.approx(values, abs=1e-6)

    # two tabs: B was opened before A's next save, then saves another image; neither is lost
    page.keyboard.press("]")  # back to image 4 in tab A
    other = _open(browser, server)
    assert other.inner_text("#position") == f"4 / {N}"
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.getElementById('position').textContent === '5 / {N}'")
    other.keyboard.press("]")  # tab B moves on to image 5, still thinking 4 is open
    other.keyboard.press("2")
    other.keyboard.press("ArrowLeft")
    other.keyboard.press("Enter")
    other.wait_for_function(f"document.getElementById('progress-text').textContent === '{N} / {N} labelled'")
    assert len(complete(read_hand_labels(dataset / "hand_labels.csv"))) == N
    other.keyboard.press("g")
    other.wait_for_function(f"document.querySelectorAll('#grid .cell.labelled').length === {N}")
    screenshot(page, "labelling")
    other.context.close()
    page.context.close()


def test_bad_saves_and_paths_are_refused(server):
    for body, needle in [({"values": {"eyes": 2}}, "a label needs exactly"),
                         ({"values": {c: 0.5 for c in CONDITIONS} | {"eyes": 1.5}}, "eyes must be a number in [0, 1]"),
                         ({"values": {c: 0.5 for c in CONDITIONS} | {"head": "left"}}, "head must be a number"),
                         ({"other": 1}, "send JSON")]:
        r = httpx.post(server + "/api/label/0", json=body)
        assert r.status_code == 400 and needle in r.json()["error"], r.text
    assert httpx.post(server + "/api/label/0", content=b"{not json").status_code == 400
    assert httpx.post(server + f"/api/label/{N}", json={"values": {c: 0.5 for c in CONDITIONS}}).status_code == 404
    assert httpx.get(server + f"/api/image/{N}").status_code == 404
    assert httpx.get(server + "/static/..%2Fsheet.py").status_code == 404
    assert httpx.get(server + "/static/label.js").status_code == 200


def test_attributes_refuses_a_partly_labelled_sheet_unless_asked(dataset, tmp_path):
    from training.cli import main

    sheet = tmp_path / "sheet.csv"
    female = sorted(p.relative_to(dataset).as_posix() for p in (dataset / "Female").iterdir())[:4]
    lines = ["file," + ",".join(CONDITIONS)]
    lines += [f"{f},0.2,0.3,0.4,0.5,0.6" for f in female[:3]] + [f"{female[3]},,,,,"]
    sheet.write_text("\n".join(lines) + "\n")
    args = ["attributes", "--data", str(dataset), "--hand-labels", str(sheet), "--preset", "tiny",
            "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "3 of 4 images labelled, 1 still blank" in res.output and "--allow-partial" in res.output
    res = CliRunner().invoke(main, [*args, "--allow-partial", "--set", "steps=2", "--set", "eval_every=1"])
    assert res.exit_code == 0, res.output
    assert "training on the 3 labelled" in res.output


def test_celeba_sheet_suggests_the_dataset_labels_then_the_model(tmp_path, synth_root):
    """On CelebA the sheet starts from its coarse eyes, mouth and hair colour, and from the shipped
    attribute model for background and head; only a confirmation writes a row."""
    from services.shared.layouts import open_dataset
    from tests.test_layouts import _celeba
    from training.labelling.sheet import Sheet, model_suggestions

    _celeba(tmp_path, synth_root)  # one female image (Male = -1) among six
    ds = open_dataset(tmp_path)
    sheet = Sheet(ds, 5, model_suggestions(REPO / "exports" / "attributes" / "1"))
    assert [it.record.file for it in sheet.items] == [r.file for r in ds.records if r.female]
    for it in sheet.items:
        assert it.sources == {"eyes": "dataset", "mouth": "dataset", "hair_color": "dataset",
                              "background": "model", "head": "model"}
        for c in ("eyes", "mouth", "hair_color"):
            assert it.suggested[c] == it.record.conditions[c]
        assert all(0.0 <= v <= 1.0 for v in it.suggested.values())
    assert not (tmp_path / "hand_labels.csv").exists()  # suggestions are not labels
    sheet.save(0, {c: 0.25 for c in CONDITIONS})
    assert complete(read_hand_labels(tmp_path / "hand_labels.csv")) == {sheet.items[0].record.file: {c: 0.25 for c in CONDITIONS}}
