"""Agent data model, prompt builders and lenient parsers for planner and critic outputs."""

from itk_rl.formats.critic import (
    CriticVerdict,
    build_critic_messages,
    format_critic_answer,
    parse_critic_output,
)
from itk_rl.formats.envelope import ParseResult
from itk_rl.formats.images import RecordError, white_canvas
from itk_rl.formats.plan import Plan, Step
from itk_rl.formats.planner import (
    build_planner_messages,
    format_planner_answer,
    parse_planner_output,
)
from itk_rl.formats.records import CriticSample, Evaluation, critic_sample_features
from itk_rl.formats.score import JudgeScore
from itk_rl.formats.templates import PromptTemplate, load_template, packaged_template_names
from itk_rl.formats.trajectory import (
    Attempt,
    Request,
    StepRecord,
    Trajectory,
    trajectory_features,
)

__all__ = [
    "Attempt",
    "CriticSample",
    "CriticVerdict",
    "Evaluation",
    "JudgeScore",
    "ParseResult",
    "Plan",
    "PromptTemplate",
    "RecordError",
    "Request",
    "Step",
    "StepRecord",
    "Trajectory",
    "build_critic_messages",
    "build_planner_messages",
    "critic_sample_features",
    "format_critic_answer",
    "format_planner_answer",
    "load_template",
    "packaged_template_names",
    "parse_critic_output",
    "parse_planner_output",
    "trajectory_features",
    "white_canvas",
]
