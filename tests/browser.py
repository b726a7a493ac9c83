"""Check a static site in headless Chromium: every page renders, every image decodes, every link resolves.

Chromium loads a harness page (outside the site) that opens every ``*.html`` of the site in an
iframe and reports, per page, its title, each ``<img>``'s load state and natural size, and each
``<a>``'s resolved URL; ``--dump-dom`` prints the result. Python then checks the report against
the files on disk. Also usable by hand: ``python tests/browser.py SITE [--screenshot PAGE OUT.png]``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

HARNESS = """<!doctype html><html><head><meta charset="utf-8"><title>harness</title></head><body>
<pre id="out">pending</pre><script>
const pages = %s, res = {};
let left = pages.length;
function done(p, value) {
  res[p] = value;
  if (--left === 0) document.getElementById("out").textContent = "RESULT" + JSON.stringify(res) + "END";
}
for (const p of pages) {
  const f = document.createElement("iframe");
  f.width = 1200; f.height = 900;
  f.onload = () => {
    try {
      const d = f.contentDocument;
      done(p, {title: d.title, text: d.body ? d.body.innerText.length : 0,
               height: d.documentElement.scrollHeight,
               images: [...d.images].map(i => ({src: i.src, complete: i.complete, width: i.naturalWidth,
                                                height: i.naturalHeight})),
               links: [...d.links].map(a => a.href)});
    } catch (e) { done(p, {error: String(e)}); }
  };
  f.src = p;
  document.body.appendChild(f);
}
</script></body></html>
"""


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(chromium: str, args: list[str], profile: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
           "--disable-extensions", f"--user-data-dir={profile}", *args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(2, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def render(site: str | os.PathLike, chromium: str | None = None, timeout: float = 120.0) -> dict:
    """``{page (relative to site): {"title", "text", "height", "images", "links"}}`` as Chromium sees it."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium binary found")
    site = Path(site).resolve()
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    with tempfile.TemporaryDirectory(prefix="sitecheck-") as tmp:
        harness = Path(tmp) / "harness.html"
        harness.write_text(HARNESS % json.dumps([(site / p).as_uri() for p in pages]))
        out = _run(chromium, ["--allow-file-access-from-files", "--virtual-time-budget=30000",
                              "--dump-dom", harness.as_uri()], str(Path(tmp) / "profile"), timeout)
    match = re.search(r'<pre id="out">RESULT(.*?)END</pre>', out.stdout, re.S)
    if match is None:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"chromium did not finish loading the pages (exit {out.returncode}): {tail}")
    raw = json.loads(html.unescape(match.group(1)))
    return {Path(unquote(urlsplit(url).path)).relative_to(site).as_posix(): value for url, value in raw.items()}


def _local(url: str) -> Path | None:
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def check_site(site: str | os.PathLike, start: str = "index.html", chromium: str | None = None,
               timeout: float = 120.0) -> dict:
    """Render every page; return ``{"pages", "images", "links", "problems": [...]}``.

    A problem is: a page that did not load or is empty, an image that did not decode (or has no
    size), a link that leaves the site or points at a missing file, a page not reachable from
    ``start`` by links.
    """
    site = Path(site).resolve()
    seen = render(site, chromium, timeout)
    problems: list[str] = []
    n_images = n_links = 0
    graph: dict[str, set[str]] = {}
    for page, info in sorted(seen.items()):
        if "error" in info:
            problems.append(f"{page}: not loaded ({info['error']})")
            continue
        if not info["title"] or info["text"] == 0:
            problems.append(f"{page}: empty page")
        for img in info["images"]:
            n_images += 1
            path = _local(img["src"])
            if path is None:
                problems.append(f"{page}: external image {img['src']}")
            elif not (img["complete"] and img["width"] > 0 and img["height"] > 0):
                problems.append(f"{page}: broken image {img['src']}")
        graph[page] = set()
        for href in info["links"]:
            n_links += 1
            path = _local(href)
            if path is None:
                problems.append(f"{page}: external link {href}")
                continue
            if site not in path.resolve().parents or not path.is_file():
                problems.append(f"{page}: broken link {href}")
                continue
            if path.suffix == ".html":
                graph[page].add(path.resolve().relative_to(site).as_posix())
    reached, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    problems += [f"{page}: not reachable from {start}" for page in sorted(set(seen) - reached)]
    return {"pages": len(seen), "images": n_images, "links": n_links, "problems": problems}


def screenshot(page: str | os.PathLike, out: str | os.PathLike, width: int = 1100, height: int = 900,
               chromium: str | None = None, timeout: float = 120.0) -> Path:
    """Save a PNG screenshot of ``page`` (a file) at ``width x height``."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("no chromium binary found")
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="sitecheck-") as tmp:
        result = _run(chromium, ["--hide-scrollbars", f"--window-size={width},{height}",
                                 "--virtual-time-budget=10000", f"--screenshot={out}", Path(page).resolve().as_uri()],
                      str(Path(tmp) / "profile"), timeout)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode})")
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("site")
    p.add_argument("--screenshot", nargs=2, metavar=("PAGE", "OUT.png"))
    p.add_argument("--size", default="1100,900", help="screenshot window WIDTH,HEIGHT")
    args = p.parse_args(argv)
    report = check_site(args.site)
    print(json.dumps(report, indent=1))
    if args.screenshot:
        width, height = (int(v) for v in args.size.split(","))
        print(screenshot(Path(args.site) / args.screenshot[0], args.screenshot[1], width, height))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
