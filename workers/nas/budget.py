"""Parameter budget: PEML is parameter-efficient only if its added modules stay small.

The check is a plain function of three numbers so the trainer can apply it to any
combination of added modules (prefix generator, LoRA, heads), and so its message can
say exactly how far over budget a configuration is.
"""

from __future__ import annotations


def check_parameter_budget(
    added: int,
    base: int,
    *,
    fraction: float = 0.10,
    what: str = "an adapter",
    remedy: str = "Lower the prefix width, the number of cells or the prefix length.",
) -> int:
    """Return ``added`` if it is at most ``fraction`` of ``base`` parameters.

    Raises:
        ValueError: ``added`` exceeds the budget (the message gives the count, the share
            and the limit), or the arguments are not positive.
    """
    if base <= 0:
        raise ValueError(f"the base model's parameter count must be positive, got {base}")
    if added < 0:
        raise ValueError(f"the added parameter count cannot be negative, got {added}")
    if not fraction > 0:
        raise ValueError(f"the budget fraction must be positive, got {fraction}")
    limit = fraction * base
    if added > limit:
        raise ValueError(
            f"{what} adds {added:,} parameters, {added / base:.2%} of the base model's {base:,}; "
            f"the budget is {fraction:.0%} ({int(limit):,}). {remedy}"
        )
    return added
