"""CaRe-DPO: SFT -> sample -> score -> DG-DPO -> caption -> retriever (``python -m experiments.care_dpo``)."""
