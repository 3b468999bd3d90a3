"""The scripted testbed agents answer in the real formats, read their chat like a model does,
and say what the exact judge says."""

import pytest

from itk_rl.formats import (
    build_critic_messages,
    build_planner_messages,
    load_template,
    parse_critic_output,
    parse_planner_output,
    white_canvas,
)
from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.testbed import (
    Scene,
    ShapeObject,
    TaskSampler,
    TestbedGenerator,
    canonicalize,
    describe,
    render,
)
from itk_rl.testbed.agents import (
    TestbedOracleCritic,
    TestbedSamplingCritic,
    TestbedScriptedPlanner,
    plan_request,
)

PLANNER = load_template("planner")
CRITIC = load_template("critic_testbed")


def planner_request(text, images=()):
    return ChatRequest(tuple(build_planner_messages(text, len(images), PLANNER)), tuple(images))


def critic_request(original, used, before, after):
    messages = build_critic_messages(CRITIC, original, used)
    return ChatRequest(tuple(messages), (before, after))


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_planner_answers_the_ground_truth_plan(rate):
    planner = TestbedScriptedPlanner("planner")
    for task in TaskSampler(seed=3, synonym_rate=rate).sample(10):
        [[completion]] = planner.generate([planner_request(task.request)], SamplingParams())
        parsed = parse_planner_output(completion.text)
        assert parsed.format_valid, parsed.repairs
        got = parsed.value.steps
        assert [s.prompt for s in got] == [s.prompt for s in task.plan.steps]
        assert [s.auxiliary_text for s in got] == [describe(scene) for scene in task.scenes]


def test_planner_starts_from_the_input_image():
    start = Scene.of(left=ShapeObject("circle", "red"))
    plan = plan_request("make the circle blue", start)
    assert plan.steps[0].auxiliary_text == "left large blue circle; centre none; right none"
    request = planner_request("make the circle blue", [render(start)])
    [[completion]] = TestbedScriptedPlanner().generate([request], SamplingParams())
    assert parse_planner_output(completion.text).value == plan


def test_planner_gives_an_empty_plan_for_requests_outside_the_grammar():
    [[completion]] = TestbedScriptedPlanner().generate(
        [planner_request("a cat wearing a hat")], SamplingParams(n=1)
    )
    parsed = parse_planner_output(completion.text)
    assert parsed.value is None and "no usable steps" in parsed.error
    assert "cannot plan" in parsed.think


def test_critic_rejects_a_prompt_from_another_template():
    with pytest.raises(ValueError, match="does not follow prompt template"):
        TestbedOracleCritic().generate([planner_request("draw a red circle")], SamplingParams())


def test_critic_accepts_a_correct_render_and_refines_a_misrendered_one():
    generator = TestbedGenerator(misrender_prob=1.0)
    critic = TestbedOracleCritic("critic_testbed")
    blank = white_canvas(48, 48)
    original = "draw a crimson disc on the left"
    wrong = generator([RenderRequest(original, seed=1)])[0]
    right = generator([RenderRequest("draw a red circle on the left", seed=1)])[0]
    answers = critic.generate(
        [
            critic_request(original, original, blank, wrong),
            critic_request(original, "x", blank, right),
        ],
        SamplingParams(n=2),
    )
    assert [len(a) for a in answers] == [2, 2]
    rejected = parse_critic_output(answers[0][0].text)
    accepted = parse_critic_output(answers[1][0].text)
    assert rejected.format_valid and accepted.format_valid
    assert rejected.value.success is False
    assert rejected.value.refine_prompt == "draw a red circle on the left"
    assert "Expected: left large red circle" in rejected.value.reasoning
    assert accepted.value.success is True and accepted.value.refine_prompt == ""


def test_critic_cannot_judge_an_instruction_that_does_not_apply():
    blank = white_canvas(48, 48)
    request = critic_request("make the circle blue", "make the circle blue", blank, blank)
    verdict = TestbedOracleCritic().verdict(request)
    assert verdict.success and "cannot judge" in verdict.reasoning


def test_a_critic_blind_to_the_vocabulary_spells_refinements_at_random():
    """`canonical_rate` 0: each word of a refinement takes any of its spellings, core or
    synonym, so some refinements are all core words and some are not; all mean the same."""
    generator = TestbedGenerator(misrender_prob=1.0)
    critic = TestbedOracleCritic("critic_testbed", canonical_rate=0.0)
    blank = white_canvas(48, 48)
    original = "draw a crimson disc on the left"
    wrong = generator([RenderRequest(original, seed=1)])[0]
    messages = build_critic_messages(CRITIC, original, original)
    refined = {
        critic.verdict(ChatRequest(tuple(messages), (blank, wrong), seed=seed)).refine_prompt
        for seed in range(30)
    }
    assert "draw a red circle on the left" in refined
    paraphrases = refined - {"draw a red circle on the left"}
    assert {"crimson", "scarlet", "disc"} <= {w for text in paraphrases for w in text.split()}
    for text in paraphrases:
        assert canonicalize(text) == "draw a red circle on the left"
    again = critic.verdict(ChatRequest(tuple(messages), (blank, wrong), seed=3))
    assert again == critic.verdict(ChatRequest(tuple(messages), (blank, wrong), seed=3))
    with pytest.raises(ValueError, match="canonical_rate"):
        TestbedOracleCritic(canonical_rate=1.5)


def test_a_sampling_critic_writes_different_refinements_within_a_group(tiny_models):
    """`TestbedSamplingCritic`: the n answers of a failed step are the teacher's verdicts,
    paraphrased per answer, with the critic tokenizer's ids; a rerun gives the same answers."""
    from transformers import AutoTokenizer

    generator = TestbedGenerator(misrender_prob=1.0)
    tokenizer_path = str(tiny_models.qwen3_vl)
    critic = TestbedSamplingCritic(tokenizer_path, "critic_testbed")
    blank = white_canvas(48, 48)
    original = "draw a crimson disc on the left"
    wrong = generator([RenderRequest(original, seed=1)])[0]
    right = generator([RenderRequest("draw a red circle on the left", seed=1)])[0]
    requests = [
        ChatRequest(tuple(build_critic_messages(CRITIC, original, original)), (blank, wrong), 4),
        ChatRequest(tuple(build_critic_messages(CRITIC, original, "x")), (blank, right), 5),
    ]
    rejected, accepted = critic.generate(requests, SamplingParams(n=8))
    verdicts = [parse_critic_output(c.text).value for c in rejected]
    assert not any(v.success for v in verdicts)
    refinements = {v.refine_prompt for v in verdicts}
    assert len(refinements) >= 4
    assert {canonicalize(r) for r in refinements} == {"draw a red circle on the left"}
    assert all(parse_critic_output(c.text).value.success for c in accepted)
    eos = AutoTokenizer.from_pretrained(tokenizer_path).eos_token_id
    assert all(c.token_ids and c.token_ids[-1] == eos for c in rejected + accepted)
    assert critic.generate(requests, SamplingParams(n=8)) == [rejected, accepted]
