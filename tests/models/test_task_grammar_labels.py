from hierlens.models import get_task


def test_in_relative_clause_label_marks_exactly_the_relative_clauses():
    for name in ("question_formation", "tense_inflection"):
        task = get_task(name)
        seen_rc = 0
        for ex in task.sample(200, "train", seed=5) + task.sample(100, "test_ood", seed=5):
            words = [task.vocab[t] for t in ex.tokens[1 : 1 + len(ex.word_positions)]]
            flags = ex.token_labels["in_relative_clause"][1 : 1 + len(words)]
            # every relative pronoun opens a clause; a clause is contiguous and starts at one
            starts = [i for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1])]
            assert [words[i] for i in starts] == [w for w in words if w in ("who", "that")]
            n_rc = ex.labels["tree"].count("(RC ")
            assert len(starts) == n_rc
            seen_rc += n_rc
            assert ex.token_labels["in_relative_clause"][0] == -1  # <bos>
        assert seen_rc > 20


def test_transduction_base_lives_in_its_own_module():
    from hierlens.models.tasks import (
        QuestionFormationTask,
        TenseInflectionTask,
        TransductionTask,
        grammar,
    )
    from hierlens.models.tasks.transduction import TransductionTask as New

    assert TransductionTask is New
    assert issubclass(QuestionFormationTask, New) and issubclass(TenseInflectionTask, New)
    assert not hasattr(grammar, "TransductionTask")  # one path: the transduction module
