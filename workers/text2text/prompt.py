"""Prompt templates: a task's input row written as one line of text.

The template depends on the task's *shape* (see :data:`workers.data.SHAPES`) and starts
with the task name, as in T5's multi-task mixture, so one model tells the tasks apart:

    rte sentence1: A man is sleeping. sentence2: Nobody sleeps.
    boolq question: is it? passage: It is.

The template reads the two texts a row is reduced to (:func:`workers.data.to_texts`),
so training rows and rows given to a predictor go through exactly the same code.
:data:`TEMPLATE_ID` names this scheme in checkpoints and artifacts; change it when a
template changes, so an old artifact is never read with new prompts.
"""

from __future__ import annotations

TEMPLATE_ID = "shape-fields-v1"

# shape -> (label of text_a, label of text_b)
FIELD_LABELS: dict[str, tuple[str, str]] = {
    "single": ("sentence", ""),
    "pair": ("sentence1", "sentence2"),
    "boolq": ("question", "passage"),
    "copa": ("premise", "choices"),
    "wic": ("sentence1", "sentence2"),
}


def format_prompt(task: str, shape: str, text_a: str, text_b: str | None, *, template: str = TEMPLATE_ID) -> str:
    """The prompt of one row.

    Raises:
        ValueError: an unknown template id or shape.
    """
    if template != TEMPLATE_ID:
        raise ValueError(f"unknown prompt template {template!r}; this version writes {TEMPLATE_ID!r}")
    try:
        label_a, label_b = FIELD_LABELS[shape]
    except KeyError:
        raise ValueError(f"no prompt template for shape {shape!r}") from None
    prompt = f"{task} {label_a}: {text_a}"
    if text_b is not None:
        prompt += f" {label_b or 'text'}: {text_b}"
    return prompt
