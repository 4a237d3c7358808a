"""Saving a figure: written where asked, at the figure's size, and closed."""

from __future__ import annotations

from pathlib import Path

from unitrefine.figures import plt, save


def test_save_writes_the_figure_at_110_dpi_and_closes_it(tmp_path: Path) -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    path = save(fig, tmp_path / "line.png")
    header = path.read_bytes()[:24]
    assert path == tmp_path / "line.png" and header[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")) == (330, 220)
    assert fig.number not in plt.get_fignums()
