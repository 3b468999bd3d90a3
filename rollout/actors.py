"""Ray actor groups built from config: the actors every group starts, names and kills.

Async style, used by every actor group in itk_rl: callers get `concurrent.futures.Future`s. The
generator and judge pools batch their callers' requests on the driver
(`itk_rl.rollout.batching`); the rollout workers hand back one future per request.

Components are built inside the actors by `hydra.utils.instantiate` from plain config dicts
(`{"_target_": ..., ...}`), so a model is loaded where its resources were declared and only
plain data crosses the Ray boundary.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import ray

PROBE_INTERVAL_S = 0.2
"""How often an actor that Ray is restarting is asked whether it is back."""
RESTART_TIMEOUT_S = 120.0
"""How long a group waits for a lost actor to come back before leaving it out for good, unless
the recipe says otherwise (`fault_tolerance.restart_timeout_s`)."""


class ActorGroupLost(RuntimeError):
    """No actor of a group is left: each died for good, or was not back within its restart
    time-out (its node died and no live node has what it needs). The group can serve nothing
    again, so the job stops with this message rather than waiting forever."""


def build_component(config: dict[str, Any]) -> Any:
    """`hydra.utils.instantiate(config)`, nested containers passed on as plain dicts and lists.

    `_target_` is a dotted name in recipes. A class is accepted too, for components Ray
    workers cannot import by name (classes defined in a test module, pickled by value).
    """
    from hydra.utils import instantiate  # import where the component is built

    target = config.get("_target_")
    if callable(target):  # hydra would turn it back into a name, which may not import here
        arguments = {key: value for key, value in config.items() if key != "_target_"}
        return target(**instantiate(arguments, _convert_="all"))
    return instantiate(config, _convert_="all")


class ComponentActor:
    """Holds one component built from `config`; runs its methods and times them.

    Wrapped by `ray.remote` in `make_actors`. Times are measured here, inside the actor, so a
    pool's busy fraction counts compute, not queueing or transfers.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.component = build_component(config)

    def ready(self) -> bool:
        """Returns once the component is built: a bad config fails at group start."""
        return True

    def call_batch(self, method: str, items: Sequence[tuple]) -> tuple[list[Any], float]:
        """`component.<method>(column_0, column_1, ...)` over the items' argument tuples.

        Returns one result per item, in order, and the seconds spent inside the method.
        """
        columns = [list(column) for column in zip(*items, strict=True)]
        start = time.perf_counter()
        results = list(getattr(self.component, method)(*columns))
        seconds = time.perf_counter() - start
        if len(results) != len(items):
            raise ValueError(
                f"{type(self.component).__name__}.{method} returned {len(results)} results "
                f"for {len(items)} items; it must return one per item, in order"
            )
        return results, seconds


def make_actors(
    actor_class: type,
    config: dict[str, Any],
    num_actors: int,
    num_cpus: float,
    num_gpus: float,
    max_restarts: int,
    max_task_retries: int,
    resources: Mapping[str, float] | None = None,
    label_selector: Mapping[str, str] | None = None,
    group: str = "actor",
) -> tuple[list[ray.actor.ActorHandle], list[str]]:
    """Start `num_actors` actors of `actor_class(config)` and wait until each has built its
    component (errors in `config` surface here, not on the first call). Returns the actors and
    their names, `itk-<group>-<index>-<8 hex digits>` (in the dashboard, for `ray.get_actor`,
    and in error messages).

    `max_restarts` / `max_task_retries`: Ray restarts an actor that died (its component is
    rebuilt from `config`) and re-runs the calls it had in flight. `resources` (custom Ray
    resources, {name: amount}) and `label_selector` ({label: value}) place each actor on a
    node type: a node that has those resources, or those labels.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    remote_class = ray.remote(actor_class)
    options = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": max_restarts,
        "max_task_retries": max_task_retries,
        "resources": dict(resources) if resources else None,
        "label_selector": dict(label_selector) if label_selector else None,
    }
    run = uuid.uuid4().hex[:8]
    names = [f"itk-{group}-{index}-{run}" for index in range(num_actors)]
    actors = [remote_class.options(name=name, **options).remote(config) for name in names]
    try:
        ray.get([actor.ready.remote() for actor in actors])
    except Exception:
        kill_actors(actors)  # the ones that did start must not hold their resources
        raise
    return actors, names


def kill_actors(actors: Sequence[ray.actor.ActorHandle]) -> None:
    """Kill for good (no restart): their resources go back to the cluster."""
    for actor in actors:
        ray.kill(actor, no_restart=True)


def group_lost(group: str, gone: Mapping[str, str], needs: str) -> ActorGroupLost:
    """The error of a group with no actor left: each actor's name and why it is gone (`gone`),
    and what the group needs that the cluster lacks (`unmet_needs`)."""
    actors = "; ".join(f"{name} {why}" for name, why in gone.items())
    return ActorGroupLost(
        f"no {group} actor is left ({actors}): {needs}. Add a node that has it (or change the "
        f"group's resources or label_selector) and resume the run from its last checkpoint"
    )


def unmet_needs(
    group: str,
    num_cpus: float,
    num_gpus: float,
    resources: Mapping[str, float] | None = None,
    label_selector: Mapping[str, str] | None = None,
) -> str:
    """Why an actor of `group` with these needs may not come back, read from the live nodes
    (`ray.nodes()`), e.g. "generator needs {'flux': 1.0}; no live node has it"."""
    asks = {"CPU": float(num_cpus), "GPU": float(num_gpus)}
    asks |= {name: float(amount) for name, amount in (resources or {}).items()}
    asks = {name: amount for name, amount in asks.items() if amount > 0}
    selector = dict(label_selector or {})
    nodes = [node for node in ray.nodes() if node["Alive"]]

    def has(node: Mapping[str, Any], name: str) -> bool:
        return node["Resources"].get(name, 0.0) >= asks[name] - 1e-9

    def matches(node: Mapping[str, Any]) -> bool:
        return labels_match(selector, node.get("Labels") or {})

    missing = {name: ask for name, ask in asks.items() if not any(has(n, name) for n in nodes)}
    problems = [f"{group} needs {missing}; no live node has it"] if missing else []
    if selector and not any(matches(node) for node in nodes):
        problems.append(f"{group} needs a node labelled {selector}; no live node has those labels")
    if problems:
        return "; ".join(problems)
    where = f" on a node labelled {selector}" if selector else ""
    if not any(matches(node) and all(has(node, name) for name in asks) for node in nodes):
        return f"{group} needs {asks}{where}; live nodes have each part, none has it all"
    return (
        f"{group} needs {asks}{where}; a live node has it, so other actors hold it or the actor "
        "was still starting (a slow model load needs a longer restart_timeout_s)"
    )


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a node with `labels` satisfies a Ray label selector: per key, `value`,
    `!value`, `in(a, b)` or `!in(a, b)` (a negation also matches a node without the label)."""
    for key, expression in selector.items():
        negated = expression.startswith("!")
        body = expression.removeprefix("!")
        if body.startswith("in(") and body.endswith(")"):
            values = {value.strip() for value in body[3:-1].split(",")}
        else:
            values = {body}
        if (labels.get(key) in values) == negated:
            return False
    return True
