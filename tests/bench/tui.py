"""TUI benchmark: the real app, headless (``run_test``), on generated databases.

For each size (10k, 100k, 1M tickets by default) a database is generated once
(tests/bench/gendb.py, cached under the cache folder) and the app is driven in a
fresh process, measuring:

  first_paint_s       from building the app to the first page of the queue on screen;
  page_down_ms        key-to-repaint of page down (p50/p95 over many presses, deep into
                      the queue, crossing page fetches);
  open_ms             enter on a ticket until its conversation is on screen (p50/p95);
  filter_ms           a field filter (status:open prio:high) until its rows are shown;
  search_ms           a full-text search (a common and a rare word) until rows are shown;
  rss_mb              peak resident memory of that process.

The baseline, measured in the same run, is the 10k database: the targets are first
paint < 1 s, key p95 < 50 ms, search < 200 ms and RSS < 200 MB at 1M, and key latency at
1M no more than 1.5 times that at 10k. Prints one JSON line.

Usage: python tests/bench/tui.py [--sizes 10000,100000,1000000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ME = "alex.provider@corp.example"


def database(size: int, cache: Path) -> Path:
    """The generated database of ``size`` tickets (built once, then reused; see gendb)."""
    from tests.bench.gendb import cached

    return cached(size, cache)[0]


def config(db: Path, folder: Path) -> Path:
    """A config over ``db`` with the generator's three queues and SLA rules."""
    text = f'me = "{ME}"\n\n[database]\nurl = "sqlite:///{db}"\n'
    for key, name, tag in (
        ("it", "IT Help", "IT"),
        ("hr", "People", "HR"),
        ("facilities", "Facilities", "FAC"),
    ):
        text += f'\n[[queue]]\nkey = "{key}"\nname = "{name}"\ntag = "{tag}"\n'
        text += f'address = "{key}@corp.example"\n'
    from tests.bench.gendb import SETTINGS

    path = folder / "config.toml"
    path.write_text(text + SETTINGS)  # the SLA rules the clocks were built with
    return path


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def wait(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.0005)


class Probe:
    """Key-to-repaint: from the key event to the first screen update showing the result.

    Every screen update is timestamped; the state is polled every 0.5 ms, and the
    repaint counted is the first update after the last poll that did not see the
    result yet (so the figure is exact to within the polling step).
    """

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.started = 0.0
        self.paints: list[float] = []
        display = app._display

        def spy(screen, renderable):  # type: ignore[no-untyped-def]
            display(screen, renderable)
            self.paints.append(time.perf_counter())

        app._display = spy

    async def key(self, key: str, done) -> float:  # type: ignore[no-untyped-def]
        from textual import events

        self.paints.clear()
        t0 = last_miss = time.perf_counter()
        self.app._driver.send_message(events.Key(key, key if len(key) == 1 else None))
        while not done():
            last_miss = time.perf_counter()
            await asyncio.sleep(0.0005)
        await wait(lambda: any(p >= last_miss for p in self.paints))
        painted = next(p for p in self.paints if p >= last_miss)
        return (painted - t0) * 1000

    async def filter(self, lst, text: str) -> float:  # type: ignore[no-untyped-def]
        """Typing a filter to its first rows on screen (the count may still run)."""
        self.paints.clear()
        generation = lst.generation
        self.started = t0 = last_miss = time.perf_counter()
        self.app.screen.apply_filter(text)
        while not (lst.generation > generation and lst.loaded and not lst.fetching_first):
            last_miss = time.perf_counter()
            await asyncio.sleep(0.0005)
        await wait(lambda: any(p >= last_miss for p in self.paints))
        return (next(p for p in self.paints if p >= last_miss) - t0) * 1000


async def drive(config_path: Path) -> dict[str, float]:
    """Measure one database in this process."""
    from store.config import load_settings
    from tui.app import make_app, open_for_tui
    from tui.ticket_list import TicketList
    from tui.ticket_screen import TicketScreen

    out: dict[str, float] = {}
    start = time.perf_counter()
    ws = open_for_tui(load_settings(config_path))
    app = make_app(ws, live_interval=3600, tune_gc=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait(lambda: app.screen.query(TicketList) and app.screen.query_one(TicketList).rows)
        await pilot.pause()
        out["first_paint_s"] = round(time.perf_counter() - start, 3)
        lst = app.screen.query_one(TicketList)
        await wait(lambda: lst.total is not None)
        out["tickets"] = lst.total or 0
        probe = Probe(app)
        times = []
        for _ in range(300):
            times.append(await probe.key("pagedown", lambda: lst._pending_move == 0))
        out["page_down_p50_ms"] = round(statistics.median(times), 2)
        out["page_down_p95_ms"] = round(pct(times, 0.95), 2)
        out["rows_scrolled"] = float(lst.position or 0)
        opens = []
        for _ in range(40):
            opens.append(
                await probe.key(
                    "enter",
                    lambda: (
                        isinstance(app.screen, TicketScreen)
                        and app.screen.detail is not None
                        and bool(app.screen.query_one("#conversation").children)
                    ),
                )
            )
            await probe.key("q", lambda: not isinstance(app.screen, TicketScreen))
            await probe.key("j", lambda: True)
        out["open_p50_ms"] = round(statistics.median(opens), 2)
        out["open_p95_ms"] = round(pct(opens, 0.95), 2)
        for name, text in (
            ("filter", "status:open prio:high"),
            ("search_common", "printer"),
            ("search_rare", "quarantined zeppelin"),
        ):
            samples, counted = [], []
            for _ in range(3):
                samples.append(await probe.filter(lst, text))
                # The count comes after the rows (the status line): reported apart.
                await wait(lambda: lst.total is not None, timeout=60)
                counted.append((time.perf_counter() - probe.started) * 1000)
                await probe.filter(lst, "")
                await wait(lambda: lst.total is not None, timeout=60)
            out[f"{name}_ms"] = round(statistics.median(samples), 1)
            out[f"{name}_count_ms"] = round(statistics.median(counted), 1)
    ws.close()
    out["rss_mb"] = round(peak_rss_kb() / 1024, 1)
    return out


def peak_rss_kb() -> int:
    """This process's own peak resident memory, in KB.

    Linux's ``ru_maxrss`` carries over the parent's size at fork: a drive started by a
    benchmark run that had just built its databases in-process reported 310 MB at 1M
    tickets, the same drive started by a small process 151 MB. ``VmHWM`` is this
    program's own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(size: int, cache: Path) -> dict[str, float]:
    """Run :func:`drive` on the ``size`` database in a fresh process (clean RSS)."""
    db = database(size, cache)
    with tempfile.TemporaryDirectory() as folder:
        cfg = config(db, Path(folder))
        proc = subprocess.run(
            [sys.executable, __file__, "--drive", str(cfg)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DESKQ_NO_PARSE_POOL": "1"},
        )
    if proc.returncode != 0:
        raise SystemExit(f"size {size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "deskq-bench"))
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(asyncio.run(drive(Path(args.drive)))))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {str(size): measure(size, cache) for size in sizes}
    base, top = results[str(sizes[0])], results[str(sizes[-1])]
    summary = {
        "benchmark": "tui",
        "sizes": results,
        "key_p95_ratio_largest_to_smallest": round(
            top["page_down_p95_ms"] / max(base["page_down_p95_ms"], 0.001), 2
        ),
        "targets": {
            "first_paint_s": "< 1",
            "key_p95_ms": "< 50",
            "search_ms": "< 200",
            "rss_mb": "< 200",
            "key_ratio": "<= 1.5",
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
