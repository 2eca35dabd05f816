"""The error excerpt: the line a human would point at, decoys ignored, same cost on any size."""
from __future__ import annotations

from pathlib import Path

import pytest

from flowtui.runner.excerpt import find_excerpt, tail

NOISE = "".join(f"INFO step {i} ok rows=1000 on_error=abort errors=0 0 failed\n" for i in range(2000))
DECOYS = "INFO config: on_error=abort\nDEBUG errors=0 retries=3\nINFO 0 failed, 12 passed\n"


@pytest.mark.parametrize("text, expected", [
    (NOISE, None),
    (DECOYS * 50, None),
    ("start\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
     "    boom()\nValueError: bad row 7\n" + NOISE + "2026-01-01 ERROR later\n",
     "ValueError: bad row 7"),
    ("Traceback (most recent call last):\n  File a\nKeyError: 'x'\n\nDuring handling of the "
     "above exception, another exception occurred:\n\nTraceback (most recent call last):\n"
     "  File b\nRuntimeError: wrapped\n", "RuntimeError: wrapped"),
    ("a\n2026-01-01 12:00:00 ERROR db: connection lost\n" + NOISE + "psql: connection refused\n",
     "2026-01-01 12:00:00 ERROR db: connection lost"),
    ('{"level":"error","msg":"upload"}\n' + DECOYS, '{"level":"error","msg":"upload"}'),
    (NOISE + "curl: (7) Failed to connect to db:5432: Connection refused\n" + DECOYS * 100,
     "curl: (7) Failed to connect to db:5432: Connection refused"),
    ("x\nsh: 1: nosuchcmd: not found\n", "sh: 1: nosuchcmd: not found"),
    ("x\nKilled\n", "Killed"),
    ("x\nprocess exited with code 3\n", "process exited with code 3"),
    ("x\nexit code 0\n::flowtui progress 50\n", None),
    ("cat: /data/x.csv: No such file or directory\n", "cat: /data/x.csv: No such file or directory"),
    ("ERROR upload to s3 denied\nINFO checks: 0 failed, 12 passed\n", "ERROR upload to s3 denied"),
])
def test_the_excerpt_is_the_line_a_human_would_point_at(tmp_path: Path, text: str,
                                                         expected: str | None) -> None:
    log = tmp_path / "1.log"
    log.write_text(text)
    found = find_excerpt(log)
    assert (found.text if found else None) == expected
    if found is not None:  # its offset is where that line starts in the file
        with open(log, "rb") as fh:
            fh.seek(found.offset)
            assert fh.readline().decode().rstrip("\n") == expected


def test_the_excerpt_costs_the_same_at_the_end_of_a_gigabyte(tmp_path: Path) -> None:
    small, big = tmp_path / "small.log", tmp_path / "big.log"
    body = (NOISE + "ERROR upload failed: 503 from s3\n" + NOISE + DECOYS * 400).encode()
    small.write_bytes(body)
    with open(big, "wb") as fh:  # a sparse gigabyte before the same text
        fh.seek(1 << 30)
        fh.write(body)
    before = bytes_read()
    found = find_excerpt(big)
    read = bytes_read() - before
    assert found is not None and found.text == "ERROR upload failed: 503 from s3"
    assert found.offset == (1 << 30) + find_excerpt(small).offset
    # What it costs is what it reads: a bounded window at the end (4 MB), not the gigabyte;
    # counted by the kernel, so the machine's load cannot make this pass or fail.
    assert read <= 5 << 20, read


def bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "1.log"
    log.write_text("".join(f"line {i}\n" for i in range(10000)))
    assert tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert tail(tmp_path / "missing.log", 3) == []
