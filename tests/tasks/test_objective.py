"""What each task is judged by: the objective a report ranks methods with."""

from __future__ import annotations

from decent.tasks import LeastSquares, Objective, digits, mlp, objective_of, softmax_regression
from decent.tasks.base import SUBOPTIMALITY


def test_a_task_with_a_known_optimum_is_judged_by_its_suboptimality() -> None:
    task = LeastSquares(num_nodes=4, dim=3)
    assert task.optimum is not None and objective_of(task) == SUBOPTIMALITY
    assert SUBOPTIMALITY.lower_is_better and SUBOPTIMALITY.worst_node == "eval/subopt@node_max"
    split = digits(test_fraction=0.25, seed=0)
    convex = softmax_regression(split, 4, seed=0)
    assert convex.optimum is not None and objective_of(convex) == SUBOPTIMALITY


def test_a_network_without_an_optimum_is_judged_on_held_out_data_when_it_has_some() -> None:
    split = digits(test_fraction=0.25, seed=0)
    held_out = objective_of(mlp(split, 4, hidden=[8], seed=0))
    assert held_out == Objective("eval/test_accuracy@mean", "test accuracy", lower_is_better=False)
    task = mlp(split.train, 4, hidden=[8], seed=0)
    # every key it names is one the task reports, as the engine records it
    train_only = objective_of(task)
    assert train_only.metric == "eval/loss@mean" and train_only.lower_is_better
    assert {"loss"} <= set(task.evaluate(task.init_params(0)[None]))


def test_a_declared_objective_wins() -> None:
    class Custom:
        optimum = 0.0
        judged_by = Objective("eval/accuracy@mean", "accuracy", lower_is_better=False)

    assert objective_of(Custom()).metric == "eval/accuracy@mean"
    assert Objective("m", "l").to_json() == {
        "metric": "m",
        "label": "l",
        "lower_is_better": True,
        "worst_node": None,
        "log_scale": False,
    }
