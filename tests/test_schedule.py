"""Eval points agreed across ranks with few collectives (algoperf/schedule.py)."""

from __future__ import annotations

import math

import pytest

from algoperf.schedule import EvalSchedule


def simulate(step_times: list[float], skews: tuple[float, float], period: float, stop_at=None):
    """Two ranks in lockstep; rank r's clock reads step_end + skews[r]. Returns decisions."""
    ends, t = [], 1_000.0  # a wall clock far from the epoch, like time.time()
    for dt in step_times:
        t += dt
        ends.append(t)
    current = {}

    def stop_flag(rank, step):  # a signal reaches rank 0 only; its flag then stays set
        return rank == 0 and stop_at is not None and step >= stop_at

    def agree(values):  # the collective: element-wise max over both ranks' inputs at this step
        step = current["step"]
        now_max = max(ends[step - 1] + s for s in skews)
        return [now_max, float(stop_flag(0, step) or stop_flag(1, step))]

    schedules = [EvalSchedule(agree), EvalSchedule(agree)]
    last_eval = [0.0, 0.0]
    decisions = []
    for step in range(1, len(step_times) + 1):
        current["step"] = step
        per_rank = []
        for rank, schedule in enumerate(schedules):
            now = ends[step - 1] + skews[rank]
            due, stop = schedule.due(
                step=step,
                now=now,
                last_eval_time=last_eval[rank],
                period=period,
                stop=stop_flag(rank, step),
            )
            per_rank.append((due, stop))
            if due:
                schedule.reset(step)
                last_eval[rank] = max(ends[step - 1] + s for s in skews)  # agreed eval end
        assert per_rank[0] == per_rank[1], f"ranks disagree at step {step}"
        decisions.append(per_rank[0])
    return decisions, schedules[0].checks, ends


@pytest.mark.parametrize("skews", [(0.0, 0.0), (0.0, 0.003), (0.002, -0.004)])
def test_ranks_agree_and_evals_are_at_most_one_step_late(skews):
    step_times = [0.01] * 5000  # 50 s of steady steps, an eval every 10 s
    decisions, checks, ends = simulate(step_times, skews, period=10.0)
    eval_steps = [i + 1 for i, (due, _) in enumerate(decisions) if due]
    assert eval_steps[0] == 1  # last_eval_time starts at 0: the first eval follows step 1
    assert len(eval_steps) == 5
    previous = ends[0] + max(skews)
    for step in eval_steps[1:]:
        # The first step at which 10 s had passed (by the slowest clock) since the last eval.
        ideal = next(
            s for s in range(1, len(ends) + 1) if ends[s - 1] + max(skews) - previous >= 10.0
        )
        assert ideal <= step <= ideal + 1
        previous = ends[step - 1] + max(skews)
    assert checks < 200  # vs 5000 collectives for an all-reduce every step


def test_a_sudden_slowdown_delays_an_eval_by_at_most_max_interval_steps():
    step_times = [0.01] * 300 + [1.0] * 200
    decisions, checks, ends = simulate(step_times, (0.0, 0.0), period=20.0)
    eval_steps = [i + 1 for i, (due, _) in enumerate(decisions) if due]
    ideal = next(s for s in range(2, len(ends) + 1) if ends[s - 1] - ends[0] >= 20.0)
    assert ideal <= eval_steps[1] <= ideal + 100


def test_stop_request_on_one_rank_is_agreed_at_the_next_check():
    decisions, checks, ends = simulate([0.01] * 3000, (0.0, 0.0), period=10.0, stop_at=1500)
    stops = [i + 1 for i, (_, stop) in enumerate(decisions) if stop]
    assert stops and stops[0] >= 1500 and stops[0] <= 1500 + 100


def test_stop_request_is_seen_within_max_check_sec_of_step_time_when_evals_are_far_apart():
    # 0.5 s steps and evals an hour apart: without the time cap checks would be 100 steps (50 s)
    # apart, too slow for Slurm's warning signal; with it they are at most 5 s apart.
    step_times = [0.5] * 400
    decisions, checks, ends = simulate(step_times, (0.0, 0.0), period=3_600.0, stop_at=233)
    stops = [i + 1 for i, (_, stop) in enumerate(decisions) if stop]
    assert stops, "the stop request was never agreed"
    assert 233 <= stops[0] <= 233 + 10  # 5 s / 0.5 s per step
    assert checks >= 400 / 10 - 2  # and no more often than needed: ~every 10 steps


def test_single_process_checks_every_step_without_collectives():
    schedule = EvalSchedule()
    assert schedule.due(step=1, now=5.0, last_eval_time=0.0, period=10.0, stop=False) == (
        False,
        False,
    )
    assert schedule.due(step=2, now=10.0, last_eval_time=0.0, period=10.0, stop=True) == (
        True,
        True,
    )
    assert schedule.checks == 0
    assert math.isfinite(5.0)
