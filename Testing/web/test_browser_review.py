"""The review app end to end in a real browser (Debian's Chromium, headless, over DevTools):
open a phantom case, run ``rectal``, paint a stroke, accept, export ``.seg.nrrd``; the exported
file holds the painted voxels; a Refine right click on the stroke removes there and is undone.
Also the server's refusals over plain HTTP."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import numpy as np
import pytest
import SimpleITK as sitk
from browser import chromium, chromium_path, review_server

from oncoseg.io.segnrrd import read_seg_nrrd
from oncoseg.verbs import phantom

pytest.importorskip("trame_slicer", reason="the review app needs oncoseg[web]")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    phantom("rectal", root / "rectal", cases=1, seed=5)
    (root / "broken").mkdir()
    (root / "broken" / "t2w.nii.gz").write_bytes(b"\x00" * 64)
    with review_server(root, tmp_path_factory.mktemp("log") / "serve.log") as url:
        yield root, url


def status_of(url: str, cookie: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def test_requests_without_the_token_are_refused(served):
    _, url = served
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    token = parts.query.split("=", 1)[1]
    assert parts.hostname == "127.0.0.1"
    assert status_of(f"{base}/index.html") == 403
    assert status_of(f"{base}/index.html?secret=not-the-token") == 403
    assert status_of(f"{base}/index.html", cookie="oncoseg_review_token=guess") == 403
    assert status_of(f"{base}/index.html?secret={token}") == 200
    assert status_of(f"{base}/index.html", cookie=f"oncoseg_review_token={token}") == 200


@pytest.mark.skipif(chromium_path() is None, reason="no chromium (Debian: apt install chromium)")
def test_paint_accept_and_export_in_the_browser(served, tmp_path):
    root, url = served
    asyncio.run(browser_scenario(url, tmp_path))
    folder = root / "rectal/rectal_000/reviewed"
    before = sitk.GetArrayFromImage(read_seg_nrrd(folder / "rectal_000-rectal.seg.nrrd")
                                    .label_image()) > 0
    after = sitk.GetArrayFromImage(read_seg_nrrd(folder / "rectal_000-rectal-2.seg.nrrd")
                                   .label_image()) > 0
    assert np.all(after[before]), "painting only adds"
    assert after.sum() > before.sum(), "the painted voxels are in the export"


async def browser_scenario(url: str, tmp_path) -> None:
    async with chromium(tmp_path / "profile") as page:
        await page.send("Page.navigate", url=url)
        await page.wait_for("document.querySelector('#open-case') !== null", 90, "the page")
        errors = await page.evaluate("window.trame.state.get('case_errors')")
        assert len(errors) == 1 and errors[0].startswith("broken:"), errors
        await page.evaluate("window.trame.state.set('case_id', 'rectal/rectal_000')")
        await page.wait_for("!document.querySelector('#open-case').disabled", 10)
        await asyncio.sleep(1)  # the choice reaches the server before the click does
        await page.evaluate("document.querySelector('#open-case').click()")
        message = await page.wait_for("window.trame.state.get('message')", 60, "the case")
        assert message.startswith("Opened"), message
        await page.evaluate("document.querySelector('#run-task').click()")
        await page.wait_for("window.trame.state.get('running')", 30, "the run to start")
        await page.wait_for("!window.trame.state.get('running')", 300, "the rectal run")
        message = await page.evaluate("window.trame.state.get('message')")
        assert await page.evaluate("window.trame.state.get('has_segmentation')"), message

        # export the prediction as it is, then paint a stroke and export again
        await accept_and_export(page, 1)
        await page.wait_for("document.querySelector('.mdi-brush') !== null", 30, "Paint")
        await page.evaluate("document.querySelector('.mdi-brush').closest('button').click()")
        await page.wait_for("(window.trame.state.get('SegmentEditorState__active_effect_name')"
                            " || '').endsWith('EffectPaint')", 10, "the Paint effect")
        box = await page.wait_for(VIEW_BOX, 30, "a slice view with its image")
        x0, y0 = box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"]
        step = 0.08 * min(box["width"], box["height"])
        await page.drag([(x0 - 2 * step, y0 + k) for k in (0, 1)] +
                        [(x0 - 2 * step + k * step / 2, y0) for k in range(9)])
        await asyncio.sleep(2)
        await page.screenshot(tmp_path / "review.png")
        await accept_and_export(page, 2)

        # Refine: a right click on the painted stroke removes there (the first refine step
        # takes the segmentation as it finds it, so the paint is not locked); the page says
        # what it did, and "Undo refine" takes it back, so the exports above stay the last word
        await page.evaluate("window.trame.state.set('refine_on', true)")
        await page.wait_for("(window.trame.state.get('SegmentEditorState__active_effect_name')"
                            " || '').endsWith('RefineStrokeEffect')", 10, "the Refine effect")
        await click(page, x0, y0, "right")
        message = await page.wait_for(REFINE_MESSAGE, 30, "the refine stroke")
        assert message.startswith("Refine Rectal tumour: removed "), message
        assert await page.evaluate("window.trame.state.get('refine_undo')") == 1
        await page.evaluate("document.querySelector('#undo-refine').click()")
        await page.wait_for("window.trame.state.get('refine_undo') === 0", 20, "the undo")
        message = await page.evaluate("window.trame.state.get('message')")
        assert message.startswith("Undid the last refine of Rectal tumour"), message


# the page's next message after the export's ("Wrote ..."): the stroke's, or its error
REFINE_MESSAGE = "(m => m.startsWith('Wrote') ? null : m)(window.trame.state.get('message'))"


async def click(page, x: float, y: float, button: str) -> None:
    """Press and release one mouse button at (x, y), as a reader's click."""
    buttons = {"left": 1, "right": 2}[button]
    await page.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    await page.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button=button,
                    buttons=buttons, clickCount=1)
    await asyncio.sleep(0.1)
    await page.send("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button=button,
                    buttons=0, clickCount=1)


async def accept_and_export(page, count: int) -> None:
    await page.evaluate("document.querySelector('#accept').click()")
    await page.wait_for("window.trame.state.get('accepted')", 20, "accept")
    await page.evaluate("document.querySelector('#export').click()")
    await page.wait_for(f"(window.trame.state.get('exports') || []).length === {count}", 60,
                        f"export {count}")


# the largest slice-view element on the page once its image has arrived
VIEW_BOX = """(() => {
  const items = [...document.querySelectorAll('img, canvas, video')]
    .map(e => [e, e.getBoundingClientRect()])
    .filter(([e, r]) => r.width > 150 && r.height > 150 &&
                        (e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0)));
  if (!items.length) return null;
  items.sort((a, b) => b[1].width * b[1].height - a[1].width * a[1].height);
  const r = items[0][1];
  return {x: r.x, y: r.y, width: r.width, height: r.height};
})()"""
