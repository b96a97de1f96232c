from pipeline.tasks import get_task, registered_tasks


def test_prompts_are_deterministic_and_splits_disjoint():
    task = get_task("sort_digits")
    a = task.prompts("train", 200, seed=3)
    assert a == task.prompts("train", 200, seed=3)
    assert a != task.prompts("train", 200, seed=4)
    held = task.prompts("heldout", 200, seed=3)
    assert not {p.prompt for p in a} & {p.prompt for p in held}
    assert len({p.prompt_id for p in a}) == 200
    for p in a[:20]:
        digits = p.prompt[2:-1]
        assert p.reference == "".join(sorted(digits))


def test_gold_score_gives_partial_credit():
    task = get_task("sort_digits")
    assert task.gold_score("11349", "11349") == 1.0
    assert task.gold_score("11349", " 11349 ") == 1.0
    assert task.gold_score("11349", "11399") == 0.8
    assert task.gold_score("11349", "113490") == 5 / 6  # trailing junk costs credit
    assert task.gold_score("11349", "") == 0.0
    assert 0.0 <= task.gold_score("11349", "hello world") < 0.2


def test_registry_lists_the_task():
    assert "sort_digits" in registered_tasks()
