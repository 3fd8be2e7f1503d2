"""mindr1.data: templates, row handlers, the indexed dataset writer/reader, readers and blends.

Modules (imported explicitly; this package imports nothing heavy):
``templates`` (prompt rendering, pure Python), ``handlers`` (raw row -> text), ``tokenizer``,
``indexed`` (Megatron MMIDIDX .bin/.idx), ``preprocess`` (the CLI), ``datasets``
(``InstructionDataset``, ``PromptDataset``, ``TextDataset``), ``blend`` (``build_blend``),
``annotate`` (R1-distill rows -> cold-start SFT rows).
"""
