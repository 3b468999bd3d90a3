"""The planner's plan: an ordered list of steps, each a text and an instruction for the generator.

Field names follow the InterleaveThinker answer format exactly (`execution_plan` of
`step_number`, `step_name`, `instruction`, `prompt`, `auxiliary_text`) so checkpoints trained
on that format can be used unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """One step of a plan.

    `prompt` is the generator instruction: a text-to-image prompt for step 1 (unless the user
    gave an input image), an edit instruction applied to the previous step's final image after.
    """

    step_number: int
    step_name: str
    instruction: str
    prompt: str
    auxiliary_text: str = ""

    @property
    def display_text(self) -> str:
        """The text shown beside the step's image: `auxiliary_text`, else `instruction`."""
        return self.auxiliary_text or self.instruction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        return cls(
            step_number=int(data["step_number"]),
            step_name=str(data["step_name"]),
            instruction=str(data["instruction"]),
            prompt=str(data["prompt"]),
            auxiliary_text=str(data.get("auxiliary_text") or ""),
        )


@dataclass(frozen=True)
class Plan:
    """An execution plan; `steps` are in execution order."""

    steps: tuple[Step, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"execution_plan": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(steps=tuple(Step.from_dict(step) for step in data["execution_plan"]))
