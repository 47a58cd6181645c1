"""The one-command benchmark runner's table (tests/bench/run_all.py), without running any
benchmark::

    python -m pytest -q tests/bench/test_run_all.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.run_all import END, NA, START, summary_rows, table_markdown, write_table

README = f"# x\n\nintro\n\n## Performance\n\n{START}\nold table\n{END}\n\n## After\n\nkept\n"


def windows_doc() -> dict:
    return {"rounds": 3, "load_average_1_5_15_min": {"start": [2.5, 2.0, 1.5], "end": None},
            "summary": {"rows": [
                {"label": "streams", "unit": "events/s", "median": 52815.0, "min": 50000.0,
                 "max": 54000.5},
                {"label": "raw aiokafka", "unit": "events/s", "median": 103029.0,
                 "min": 99000.0, "max": 110000.0, "rounds": 5, "load": [1.0, 1.0, 1.0]}]}}


def test_table_is_written_between_the_markers_with_every_rows_fields(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    rows = (summary_rows("windows-city", windows_doc(), "python tests/bench/bench_windows.py")
            + summary_rows("latency", {"summary": {"label": "p99", "unit": "ms", "median": 12.5,
                                                   "min": 11.0, "max": 14.0, "rounds": 3}},
                           "python tests/bench/bench_latency.py"))
    write_table(readme, rows)
    text = readme.read_text()
    before, rest = text.split(START)
    table, after = rest.split(END)
    assert before == "# x\n\nintro\n\n## Performance\n\n"
    assert after == "\n\n## After\n\nkept\n"
    assert "old table" not in text
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert lines == [
        "| windows-city | streams | 52,815 | 50,000–54,000 | events/s | 3 | 2.50/2.00/1.50 | "
        " | `python tests/bench/bench_windows.py` |",
        "| windows-city | raw aiokafka | 103,029 | 99,000–110,000 | events/s | 5 | "
        "1.00/1.00/1.00 |  | `python tests/bench/bench_windows.py` |",
        "| latency | p99 | 12.5 | 11–14 | ms | 3 | n/a |  | "
        "`python tests/bench/bench_latency.py` |",
    ]


@pytest.mark.parametrize("doc", [None, {}, {"summary": {}}, {"summary": {"rows": []}},
                                 {"summary": "broken"}, {"throughput": 5}])
def test_a_bench_without_a_summary_gets_one_na_row(doc: dict | None, tmp_path: Path) -> None:
    rows = summary_rows("failover", doc, "python tests/bench/bench_failover.py")
    assert len(rows) == 1
    line = table_markdown(rows).splitlines()[-1]
    assert line == (f"| failover | {NA} | {NA} | {NA} | {NA} | {NA} | {NA} |  | "
                    "`python tests/bench/bench_failover.py` |")


def test_rewriting_the_table_replaces_it_and_keeps_the_rest(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    write_table(readme, summary_rows("a", windows_doc(), "cmd-one"))
    write_table(readme, summary_rows("b", None, "cmd-two"))
    text = readme.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    assert "cmd-one" not in text and "`cmd-two`" in text
    assert text.endswith("\n\n## After\n\nkept\n")


def test_quick_rows_say_they_are_not_a_measurement() -> None:
    rows = summary_rows("windows-city", windows_doc(), "cmd", quick=True)
    assert all("quick check, not a measurement" in ln
               for ln in table_markdown(rows).splitlines()[2:])


def test_a_readme_without_markers_gets_a_performance_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    write_table(readme, summary_rows("b", None, "cmd"))
    text = readme.read_text()
    assert text.startswith("# x\n\n## Performance\n\n" + START + "\n")
    assert text.rstrip().endswith(END)
