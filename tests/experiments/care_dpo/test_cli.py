"""experiments.care_dpo.cli: the table a run prints. Runs of the command are in tests/test_care_dpo_pipeline.py."""

from __future__ import annotations

from experiments.care_dpo.cli import table


def test_the_table_lists_every_retriever_and_caption_source_and_marks_what_is_missing() -> None:
    summary = {"seed": 2, "wall_s": 61.5, "skipped_stages": ["sft", "captions_sft"],
               "retrieval": {"sft-role": {"t2v_R1": 31.25, "v2t_R1": 30.0}, "dgdpo-role": {"t2v_R1": 35.5}},
               "captions": {"sft": {"caption_r1": 12.5, "family_r1": 40.0, "attribute_precision": 0.8125,
                                    "attribute_recall": 0.5},
                            "dgdpo": {"caption_r1": 15.0, "attribute_precision": None}}}
    lines = table(summary).splitlines()
    assert lines[0] == "seed 2: 61.5 s (skipped: sft, captions_sft)"
    assert lines[2].split() == ["sft-role", "31.25", "30.00"]
    assert lines[3].split() == ["dgdpo-role", "35.50", "nan"]  # a metric the run lacks is shown as missing
    assert lines[5].split() == ["sft", "12.50", "40.00", "0.812", "0.500"]
    assert lines[6].split() == ["dgdpo", "15.00", "nan", "nan", "nan"]
    assert table({**summary, "skipped_stages": []}).splitlines()[0].endswith("(skipped: -)")
