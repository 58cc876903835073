"""Pictures of an RLHF episode: ``render_mode="rgb_array"`` of the environments.

A frame is a fixed-size ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8 image (every frame of a video
has the same shape): a header line with the step, the last reward, the reward so far and, once
the episode has ended, the reward model's score; below it the prompt (grey) and the response
so far (amber), word-wrapped, with a cursor after the response while it is being written. When
the text does not fit, the last lines are kept (the response is what changes).

Drawing uses Pillow and the font it embeds (``ImageFont.load_default``), so no font file ships
with the package. Pillow is imported on the first frame, not with the environment.

Nothing here reads or changes an environment's random state: :class:`RenderTally` is the
bookkeeping that ``reset``/``step`` update (the header's numbers), :func:`draw_frame` is a pure
function of its arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

RENDER_MODES: tuple[str, ...] = ("ansi", "rgb_array")
"""The render modes of :class:`~rlhf_gym.envs.rlhf_env.RLHFEnv` and its vector version."""
FRAME_WIDTH, FRAME_HEIGHT = 640, 360
FONT_SIZE = 14
MARGIN = 10
LINE_HEIGHT = FONT_SIZE + 5
HEADER_HEIGHT = LINE_HEIGHT + 10
FOOTER_HEIGHT = LINE_HEIGHT + 6
BACKGROUND = (20, 22, 30)
HEADER_BACKGROUND = (45, 50, 66)
HEADER_COLOUR = (235, 235, 240)
PROMPT_COLOUR = (150, 158, 178)
RESPONSE_COLOUR = (255, 196, 70)
ENDED_COLOUR = (120, 220, 140)


def check_render_mode(render_mode: Any) -> str | None:
    """``render_mode`` if it is ``None`` or one of :data:`RENDER_MODES`; else a ``ValueError``
    that names the allowed values."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        allowed = ", ".join(repr(m) for m in (None, *RENDER_MODES))
        raise ValueError(f"render_mode={render_mode!r} is not one of {allowed}")
    return render_mode


class RenderTally:
    """Per row: the last reward, the reward so far and the final score (``nan`` until the
    episode has ended). ``reset``/``step`` of the environments keep it; only render reads it."""

    def __init__(self, num_rows: int) -> None:
        self.last_reward = np.zeros(num_rows)
        self.total = np.zeros(num_rows)
        self.score = np.full(num_rows, np.nan)

    def reset(self, rows: Any) -> None:
        """New episodes in ``rows``."""
        self.last_reward[rows], self.total[rows], self.score[rows] = 0.0, 0.0, np.nan

    def step(self, rows: Any, rewards: np.ndarray, info: dict[str, Any]) -> None:
        """``rows`` took a step with ``rewards`` (``(B,)``); ``info`` in the vector layout."""
        self.last_reward[rows] = rewards[rows]
        self.total[rows] += rewards[rows]
        if "score" in info:
            ended = np.flatnonzero(info["_score"])
            self.score[ended] = info["score"][ended]


def header_text(
    title: str, step: int, max_steps: int, last: float, total: float, score: float
) -> str:
    """The header line: ``title · step s/n · reward r · so far R`` (``· score x`` at the end)."""
    parts = [title, f"step {step}/{max_steps}", f"reward {last:+.4f}", f"so far {total:+.4f}"]
    if not np.isnan(score):
        parts.append(f"score {score:+.4f}")
    return "  \u00b7  ".join(parts)


def ansi_text(prompt: str, response: str) -> str:
    """The ``"ansi"`` rendering: the prompt, ``│``, and the response so far."""
    return f"{prompt}\u2502{response}"


@lru_cache(maxsize=1)
def frame_font() -> Any:
    """Pillow's embedded font at :data:`FONT_SIZE` (its bitmap font without FreeType)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: bitmap font
        return ImageFont.load_default()


def printable(text: str, font: Any) -> str:
    """``text`` with tabs as spaces and other control characters dropped (newlines kept);
    characters a bitmap font cannot encode become ``?``."""
    text = re.sub(r"[^\S\n ]", " ", text.replace("\r\n", "\n"))
    text = "".join(c for c in text if c == "\n" or c.isprintable())
    if not hasattr(font, "getmetrics"):  # the bitmap fallback is Latin-1 only
        text = text.encode("latin-1", "replace").decode("latin-1")
    return text


@dataclass
class Run:
    """Text drawn at ``x`` on line ``line`` in ``colour``."""

    line: int
    x: float
    text: str
    colour: tuple[int, int, int]


def wrap(segments: list[tuple[str, tuple[int, int, int]]], font: Any, width: float) -> tuple:
    """Lay out coloured ``segments`` one after another, word-wrapped to ``width`` pixels.

    Returns the runs and the end position ``(line, x)`` (where a cursor goes). A word wider
    than a line is broken between characters; newlines start a new line.
    """
    runs: list[Run] = []
    line, x = 0, 0.0
    for text, colour in segments:
        for k, paragraph in enumerate(text.split("\n")):
            if k:
                line, x = line + 1, 0.0
            for token in re.findall(r"\s+|\S+", paragraph):
                w = font.getlength(token)
                if token.isspace():
                    if x > 0:
                        x += w
                    continue
                if x + w > width and x > 0:
                    line, x = line + 1, 0.0
                while w > width:  # a word longer than a line
                    cut = max(1, _fitting_prefix(token, font, width - x))
                    runs.append(Run(line, x, token[:cut], colour))
                    token = token[cut:]
                    line, x = line + 1, 0.0
                    w = font.getlength(token)
                if token:
                    runs.append(Run(line, x, token, colour))
                    x += w
    return runs, (line, x)


def _fitting_prefix(word: str, font: Any, width: float) -> int:
    n = 0
    while n < len(word) and font.getlength(word[: n + 1]) <= width:
        n += 1
    return n


def draw_frame(
    header: str, prompt: str, response: str, *, ended: bool, legend: bool = True
) -> np.ndarray:
    """One ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8 frame (see the module docstring): the
    cursor while not ``ended``, the colour legend at the bottom when ``legend``."""
    from PIL import Image, ImageDraw

    font = frame_font()
    image = Image.new("RGB", (FRAME_WIDTH, FRAME_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, FRAME_WIDTH, HEADER_HEIGHT - 1), fill=HEADER_BACKGROUND)
    draw.text((MARGIN, 5), printable(header, font), fill=HEADER_COLOUR, font=font)

    text_width = FRAME_WIDTH - 2 * MARGIN
    segments = [(printable(prompt, font), PROMPT_COLOUR)]
    segments.append((printable(response, font), RESPONSE_COLOUR))
    runs, (end_line, end_x) = wrap(segments, font, text_width)
    top = HEADER_HEIGHT + 6
    fits = (FRAME_HEIGHT - top - FOOTER_HEIGHT) // LINE_HEIGHT
    shift = 0  # lines scrolled away: the last ones are kept, the response is what changes
    if end_line >= fits:
        shift = end_line - fits + 1  # and the first line says that text was left out
        draw.text((MARGIN, top), "\u2026", fill=HEADER_COLOUR, font=font)
    for run in runs:
        if run.line - shift >= (1 if shift else 0):
            xy = (MARGIN + run.x, top + (run.line - shift) * LINE_HEIGHT)
            draw.text(xy, run.text, fill=run.colour, font=font)
    if not ended:  # the cursor: where the next token goes
        x, y = MARGIN + end_x + 1, top + (end_line - shift) * LINE_HEIGHT
        draw.rectangle((x, y + 1, x + 6, y + FONT_SIZE), fill=RESPONSE_COLOUR)

    y = FRAME_HEIGHT - FOOTER_HEIGHT + 3
    x = MARGIN
    labels = [("prompt", PROMPT_COLOUR), ("   response", RESPONSE_COLOUR)] if legend else []
    if legend and ended:
        labels.append(("   (ended)", ENDED_COLOUR))
    for label, colour in labels:
        draw.text((x, y), label, fill=colour, font=font)
        x += font.getlength(label)
    return np.asarray(image, dtype=np.uint8).copy()


def blank_frame(title: str) -> np.ndarray:
    """The frame before the first ``reset``."""
    header = f"{title}  \u00b7  call reset() to start an episode"
    return draw_frame(header, "", "", ended=True, legend=False)
