"""Bases of every recipe section: strict, typo-proof pydantic models (pydantic only, no implementation)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A recipe section: unknown keys are errors, assignments are validated, values are plain data."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, protected_namespaces=())


PROJ_HIDDEN = "hidden width of the projection MLP"
PROJ_OUT = "output width of the projection MLP (the space the loss compares)"
PRED_HIDDEN = "hidden width of the prediction MLP"
METHOD_NAME = "the registered method (ssl-transfer list methods)"


class MethodConfig(StrictModel):
    """Base of each method's recipe section; subclasses fix ``name`` to a Literal and add their fields."""

    name: str = Field(description=METHOD_NAME)


class ProjectedConfig(MethodConfig):
    """Fields shared by methods with a projection MLP after the encoder (sizes for small CNNs by default)."""

    proj_hidden_dim: Annotated[int, Field(gt=0)] = Field(512, description=PROJ_HIDDEN)
    proj_out_dim: Annotated[int, Field(gt=0)] = Field(128, description=PROJ_OUT)
