"""Reading a log that is still being written: the tail up to an offset, and whole lines from one."""

from __future__ import annotations

from pathlib import Path

from aicloud.executors.logs import read_lines, tail_lines, whole_lines


def test_tail_up_to_an_end_leaves_what_follows_for_the_next_read(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"one\ntwo\nthree\n")
    end = log.stat().st_size
    with log.open("ab") as f:
        f.write(b"four\n")  # written after the reader took its end
    assert tail_lines(log, 2, end=end) == "two\nthree"
    assert tail_lines(log, 2) == "three\nfour"
    assert read_lines(log, end) == ("four\n", end + 5)


def test_read_lines_gives_whole_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"done\nhalf a li")
    text, nxt = read_lines(log, 0)
    assert (text, nxt) == ("done\n", 5)
    assert read_lines(log, nxt) == ("", 5)  # the line being written waits
    with log.open("ab") as f:
        f.write("ne \u00e9t\u00e9\n".encode())
    line = "half a line \u00e9t\u00e9\n"
    assert read_lines(log, nxt) == (line, 5 + len(line.encode()))
    # one line longer than the limit comes in pieces rather than never
    log.write_bytes(b"x" * 10)
    assert read_lines(log, 0, limit=4) == ("xxxx", 4)
    assert read_lines(tmp_path / "missing", 3) == ("", 3)


def test_pulled_bytes_become_whole_lines_of_the_job_log() -> None:
    # only whole lines; the partial one waits for the next pull
    assert whole_lines(b"a\nb\npart", final=False, limit=100) == (b"a\nb\n", 4)
    assert whole_lines(b"part", final=False, limit=100) == (b"", 0)
    # the final piece is taken whole and ends with a newline
    assert whole_lines(b"a\nend", final=True, limit=100) == (b"a\nend\n", 5)
    # one line as long as a pull is taken whole rather than never
    assert whole_lines(b"x" * 8, final=False, limit=8) == (b"x" * 8, 8)
    # rank r > 0's lines are tagged, rank 0's are not
    assert whole_lines(b"a\nb\n", final=False, limit=100, rank=2) == (b"[rank 2] a\n[rank 2] b\n", 4)
    assert whole_lines(b"", final=True, limit=100, rank=1) == (b"", 0)
