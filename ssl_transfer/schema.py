"""Base class for every recipe section: strict, typo-proof pydantic models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A recipe section: unknown keys are errors, assignments are validated, values are plain data."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, allow_inf_nan=False, protected_namespaces=()
    )
