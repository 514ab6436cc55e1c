"""Browser checks of the web console (issue 22), in real headless Chromium driven by Playwright.

Run by scripts/console-check against a real `cairn serve` (auth on, the sample documents
ingested, the bundled GGUF model answering). Each step is what a person does: sign in, search,
toggle modes, open explain, ask and follow a citation, stop an answer, upload a PDF and find it,
delete it, walk the graph, manage keys; then a search-only key's view and a rate-limited key's.
Throughout: no page error, no console error but the 401/429 a step provokes on purpose, no
request to any host but the server, the key never in a URL or in localStorage, and an axe-core
audit of every page with no serious or critical violation. Screenshots of every page, desktop
and 360 px wide, go to $SHOTS.
"""

import json
import os
import pathlib
import re
import sys
import time
from urllib.parse import urlparse

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["CAIRN_URL"]
KEYS = json.loads(os.environ["CAIRN_KEYS"])
SHOTS = pathlib.Path(os.environ["SHOTS"])
AXE = pathlib.Path(os.environ["AXE_JS"]).read_text()
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
HOST = urlparse(BASE).netloc
HOSTS = {HOST, urlparse(os.environ["CAIRN_URL_NOGEN"]).netloc}
TIMEOUT = 60_000

state = {"phase": "start", "errors": [], "hosts": set(), "urls": []}
PAGES = ["search", "ask", "sources", "source", "graph", "ops"]


def step(name):
    state["phase"] = name
    print(f"console-check: {name}", flush=True)


def watch(page):
    def on_console(msg):
        if msg.type != "error":
            return
        # The statuses a step provokes on purpose: no key yet, a spent quota, a broken upload.
        expected = {"signin": "401", "rate": "429", "sources": "422", "forbidden": "403"}.get(state["phase"])
        if expected and f"status of {expected}" in msg.text:
            return
        state["errors"].append(f"[{state['phase']}] console: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: state["errors"].append(f"[{state['phase']}] page error: {e}"))

    def on_request(req):
        u = urlparse(req.url)
        if u.scheme in ("data", "blob", "about"):
            return
        state["hosts"].add(u.netloc)
        state["urls"].append(req.url)

    page.on("request", on_request)


def audit(page, name):
    """axe-core in the page (evaluated over the protocol: the page's CSP stays strict)."""
    page.evaluate(AXE)
    r = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in r["violations"] if v["impact"] in ("serious", "critical")]
    for v in bad:
        targets = [n["target"] for n in v["nodes"]][:3]
        state["errors"].append(f"[{name}] axe {v['impact']}: {v['id']}: {v['help']} {targets}")
    print(f"console-check: axe on {name}: {len(r['violations'])} violations, {len(bad)} serious or critical")


def until(page, js, arg=None, timeout_s=60, what="the condition"):
    """Polls `js` (evaluated over the protocol: the page's CSP forbids eval) until truthy."""
    deadline = time.monotonic() + timeout_s
    while not (value := page.evaluate(js, arg)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(100)
    return value


def shot(page, name):
    """A PNG of the whole page, and a smaller JPEG of the viewport (what the docs show)."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.screenshot(path=str(SHOTS / f"{name}.jpg"), type="jpeg", quality=70)


def sign_in(page, key):
    step("signin")
    page.goto(BASE + "/")
    expect(page.locator("#signin-key")).to_be_visible()
    page.fill("#signin-key", key)
    page.click("#signin-form button[type=submit]")
    step("signed-in")
    expect(page.locator("#tabs a[data-tab=search]")).to_be_visible()


def fresh_page(browser, key=None, **context):
    """A new browser context (its own sessionStorage), watched, and signed in with `key` if given."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    watch(page)
    if key:
        sign_in(page, key)
    return ctx, page


def search(page):
    step("search")
    page.fill("#q", "how should hikers treat cairns")
    page.click("#search-form button[type=submit]")
    first = page.locator("#results li.hit").first
    expect(first.locator(".where")).to_contain_text("trail-cairns.txt")
    expect(first.locator(".snippet mark").first).to_be_visible()
    assert "q=how+should+hikers" in page.url, page.url
    expect(page.locator("#search-meta")).to_contain_text("hybrid")
    audit(page, "search")
    shot(page, "search")
    # Modes: keyword, then back to hybrid with the browser's back button.
    page.select_option("select[name=mode]", "keyword")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-meta")).to_contain_text("keyword")
    assert "mode=keyword" in page.url, page.url
    page.go_back()
    expect(page.locator("#search-meta")).to_contain_text("hybrid")
    expect(page.locator("select[name=mode]")).to_have_value("hybrid")
    # Explain: each hit's score breakdown.
    page.check("input[name=explain]")
    page.click("#search-form button[type=submit]")
    details = page.locator("#results li.hit details.explain").first
    expect(details).to_be_visible()
    details.locator("summary").click()
    expect(details.locator("th", has_text="fused")).to_be_visible()
    expect(details.locator("th", has_text="bm25_rank")).to_be_visible()


def ask(page):
    step("ask")
    page.click("#tabs a[data-tab=ask]")
    page.fill("#question", "How should hikers treat cairns on the trail?")
    page.fill("input[name=max_tokens]", "48")
    page.click("#ask-go")
    # The sources arrive first, then the tokens, then `done` re-enables the button.
    expect(page.locator("#cites li").first).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#answer")).not_to_be_empty(timeout=TIMEOUT)
    expect(page.locator("#ask-go")).to_be_enabled(timeout=TIMEOUT)
    expect(page.locator("#answer-meta")).to_contain_text("llama")
    audit(page, "ask")
    shot(page, "ask")
    inline = page.locator("#answer a.cite")
    link = inline.first if inline.count() else page.locator("#cites li a").first
    href = link.get_attribute("href")
    chunk = re.search(r"chunk=([^&]+)", href).group(1)
    link.click()
    target = page.locator("#chunks li.target")
    expect(target).to_be_visible()
    assert target.get_attribute("id") == "chunk-" + chunk.replace("%2D", "-"), (target.get_attribute("id"), chunk)
    audit(page, "source")
    shot(page, "source")
    # A question the documents cannot answer: refused before the model runs.
    page.go_back()
    page.fill("#question", "What is the boiling point of liquid nitrogen in kelvin?")
    page.click("#ask-go")
    expect(page.locator("#answer-note")).to_contain_text("No evidence found", timeout=TIMEOUT)
    expect(page.locator("#ask-go")).to_be_enabled()
    # Stop: the stream closes and the server frees the generation.
    page.fill("#question", "Write a long essay about every trail marker in the documents.")
    page.fill("input[name=max_tokens]", "2000")
    page.click("#ask-go")
    expect(page.locator("#answer")).not_to_be_empty(timeout=TIMEOUT)
    page.click("#ask-stop")
    expect(page.locator("#answer-note")).to_have_text("Stopped.")
    expect(page.locator("#ask-go")).to_be_enabled()
    # The server frees the generation: poll /stats until no generation is active.
    headers = {"authorization": "Bearer " + KEYS["admin"]}
    idle = "async (h) => (await (await fetch('/stats', {headers: h})).json()).generator.active === 0"
    until(page, idle, headers, what="the stopped answer to free its generation slot")


PDF_WORDS = "Stone wardens rebuild the ridge cairns every spring after the thaw"


def tiny_pdf():
    """A one-page PDF whose text is PDF_WORDS (Helvetica, offsets computed)."""
    stream = f"BT /F1 14 Tf 72 720 Td ({PDF_WORDS}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def sources(page, tmp):
    step("sources")
    page.click("#tabs a[data-tab=sources]")
    expect(page.locator("#sources-table tbody tr").first).to_be_visible()
    pdf = tmp / "ridge-wardens.pdf"
    pdf.write_bytes(tiny_pdf())
    bad = tmp / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not a pdf")
    page.set_input_files("#files", [str(pdf), str(bad)])
    done = page.locator("#uploads li[data-file='ridge-wardens.pdf'] .result")
    expect(done).to_contain_text("created", timeout=TIMEOUT)
    expect(page.locator("#uploads li[data-file='broken.pdf'] .result")).to_contain_text("failed")
    expect(page.locator("#uploads li[data-file='broken.pdf'] progress")).to_have_attribute("value", "100")
    # Drag and drop: a drop event carrying a file.
    page.evaluate(
        """() => { const dt = new DataTransfer();
        dt.items.add(new File(['Dropped notes about moss on old cairns.'], 'dropped-notes.txt', {type: 'text/plain'}));
        document.querySelector('#upload').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true})); }""")
    expect(page.locator("#uploads li[data-file='dropped-notes.txt'] .result")).to_contain_text("created", timeout=TIMEOUT)
    row = page.locator("#sources-table tbody tr", has_text="ridge-wardens.pdf")
    expect(row).to_be_visible()
    expect(row.locator("td").nth(1)).to_have_text("pdf")
    audit(page, "sources")
    shot(page, "sources")
    # Searchable: the PDF's words find it.
    page.goto(BASE + "/#/search?q=" + "stone+wardens+ridge&mode=keyword")
    expect(page.locator("#results li.hit").first.locator(".where")).to_contain_text("ridge-wardens.pdf")
    # Delete with confirmation: cancel keeps it, confirm removes it.
    page.click("#tabs a[data-tab=sources]")
    row = page.locator("#sources-table tbody tr", has_text="ridge-wardens.pdf")
    row.locator("button", has_text="Delete").click()
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-cancel")
    expect(row).to_be_visible()
    row.locator("button", has_text="Delete").click()
    page.click("#confirm-ok")
    expect(page.locator("#sources-table tbody tr", has_text="ridge-wardens.pdf")).to_have_count(0)
    page.goto(BASE + "/#/search?q=" + "stone+wardens+ridge&mode=keyword")
    expect(page.locator("#search-meta")).to_be_visible()
    expect(page.locator("#results .where", has_text="ridge-wardens.pdf")).to_have_count(0)


def graph(page):
    step("graph")
    page.click("#tabs a[data-tab=graph]")
    page.fill("#concept-q", "cairns")
    page.click("#concept-form button[type=submit]")
    page.locator("#concept-matches a").first.click()
    centre = page.locator("#graph g.node.centre")
    expect(centre).to_have_count(1)
    first_centre = centre.get_attribute("data-id")
    expect(page.locator("#mentions a").first).to_be_visible()
    audit(page, "graph")
    shot(page, "graph")
    other = page.locator("#graph g.node:not(.centre)").first
    expect(other).to_be_visible()
    picked = other.get_attribute("data-id")
    other.locator("circle").click()
    expect(page.locator("#graph g.node.centre")).to_have_attribute("data-id", picked)
    assert picked != first_centre
    # Keyboard: focus a node and press Enter.
    node = page.locator("#graph g.node:not(.centre)").first
    key_pick = node.get_attribute("data-id")
    node.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#graph g.node.centre")).to_have_attribute("data-id", key_pick)
    # Through to a chunk that mentions it.
    page.locator("#mentions a").first.click()
    expect(page.locator("#chunks li.target")).to_be_visible()


def ops(page):
    step("ops")
    page.click("#tabs a[data-tab=ops]")
    expect(page.locator("#stats dt", has_text="sources")).to_be_visible()
    expect(page.locator("#health tbody tr", has_text="embedder")).to_contain_text("ok")
    # The search-quality gauge, from the report `telemetry.quality_report` names.
    expect(page.locator("#quality dt", has_text="hybrid ndcg_at_10")).to_be_visible()
    expect(page.locator("#quality dt:has-text('hybrid ndcg_at_10') + dd")).to_have_text("0.7118")
    expect(page.locator("#keys-panel")).to_be_visible()
    page.fill("#key-form input[name=name]", "console-made")
    page.click("#key-form button[type=submit]")
    value = page.locator("#new-key-value")
    expect(value).to_have_value(re.compile(r"^cairn_[0-9a-f]+_[0-9a-f]{64}$"))
    row = page.locator("#keys tbody tr", has_text="console-made")
    expect(row).to_be_visible()
    audit(page, "ops")
    shot(page, "ops")
    row.locator("button", has_text="Revoke").click()
    page.click("#confirm-ok")
    expect(page.locator("#keys tbody tr", has_text="console-made")).to_have_count(0)


def scoped(browser):
    """A search-only key: no Ask tab, no upload, no delete, no key management."""
    step("scoped")
    ctx, page = fresh_page(browser, KEYS["reader"])
    expect(page.locator("#tabs a[data-tab=ask]")).to_be_hidden()
    page.click("#tabs a[data-tab=sources]")
    expect(page.locator("#sources-table tbody tr").first).to_be_visible()
    expect(page.locator("#upload")).to_be_hidden()
    expect(page.locator("#sources-table button", has_text="Delete")).to_have_count(0)
    page.click("#tabs a[data-tab=ops]")
    expect(page.locator("#stats dt").first).to_be_visible()
    expect(page.locator("#keys-panel")).to_be_hidden()
    # The Ask page by its address: the key lacks `query`, and the page says so.
    step("forbidden")
    page.goto(BASE + "/#/ask")
    page.fill("#question", "How should hikers treat cairns?")
    page.click("#ask-go")
    expect(page.locator("#answer-note")).to_contain_text("This key may not do that")
    ctx.close()


def rate_limited(browser):
    ctx, page = fresh_page(browser, KEYS["tiny"])
    step("rate")
    settled = "() => document.querySelector('#search-meta')?.textContent || document.querySelector('#status').textContent"
    for i in range(20):
        page.goto(BASE + f"/#/search?q=cairn+{i}")
        until(page, settled, what="a search result or an error")
        if "Rate limited" in (page.locator("#status").text_content() or ""):
            break
    expect(page.locator("#status")).to_contain_text(re.compile(r"Rate limited: .* Retry in \d+ s"))
    ctx.close()


def narrow(browser):
    """360 px wide: every page fits without a horizontal scroll bar."""
    step("narrow")
    ctx, page = fresh_page(browser, KEYS["admin"], viewport={"width": 360, "height": 740})
    for name, hash_ in [("search", "#/search?q=trail+markers"), ("ask", "#/ask"), ("sources", "#/sources"),
                        ("graph", "#/graph"), ("ops", "#/ops")]:
        page.goto(BASE + "/" + hash_)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 362:
            wide = page.evaluate("""() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > 362 && !e.closest('.table-wrap'))
                .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)""")
            state["errors"].append(f"[narrow] {name} is {width} px wide at 360: {wide}")
        shot(page, f"{name}-360")
    ctx.close()


def no_generator(browser):
    """A server without an answer model (auth off: no sign-in): Ask lists the sources and says
    why there is no answer."""
    step("no-generator")
    ctx, page = fresh_page(browser)
    page.goto(os.environ["CAIRN_URL_NOGEN"] + "/#/ask")
    expect(page.locator("#signin-key")).to_have_count(0)
    page.fill("#question", "How should hikers treat cairns on the trail?")
    page.click("#ask-go")
    expect(page.locator("#answer-note")).to_contain_text("No answer model is configured", timeout=TIMEOUT)
    expect(page.locator("#cites li").first).to_be_visible()
    expect(page.locator("#answer")).to_be_empty()
    ctx.close()


def dark(browser):
    """The system's dark setting: the dark palette, audited for contrast like the light one."""
    step("dark")
    ctx, page = fresh_page(browser, KEYS["admin"], color_scheme="dark", viewport={"width": 1280, "height": 900})
    page.goto(BASE + "/#/search?q=trail+markers&explain=1")
    expect(page.locator("#results li.hit").first).to_be_visible()
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(21, 23, 26)", f"the dark palette is not applied: {bg}"
    audit(page, "search-dark")
    shot(page, "search-dark")
    page.goto(BASE + "/#/ops")
    expect(page.locator("#stats dt").first).to_be_visible()
    audit(page, "ops-dark")
    ctx.close()


def main():
    SHOTS.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(os.environ["TMP_DIR"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        watch(page)
        sign_in(page, KEYS["admin"])
        search(page)
        ask(page)
        sources(page, tmp)
        graph(page)
        ops(page)
        stored = page.evaluate("JSON.stringify(localStorage)")
        ctx.close()
        scoped(browser)
        rate_limited(browser)
        narrow(browser)
        dark(browser)
        no_generator(browser)
        browser.close()
    leaks = [u for u in state["urls"] if any(k in u for k in KEYS.values())]
    others = state["hosts"] - HOSTS
    problems = state["errors"][:]
    if others:
        problems.append(f"requests to other hosts: {sorted(others)}")
    if leaks:
        problems.append(f"a key in a URL: {leaks[:3]}")
    if any(k in stored for k in KEYS.values()):
        problems.append("a key in localStorage")
    print(f"console-check: {len(state['urls'])} requests, all to {sorted(HOSTS)}" if not others else "")
    if problems:
        print("console-check: FAILED\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"console-check: ok (screenshots in {SHOTS})")


if __name__ == "__main__":
    main()
