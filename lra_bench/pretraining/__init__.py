"""Self-pretraining (SPT; Amos, Berant & Gupta, "Never Train from Scratch", ICLR 2024): a denoising stage on the
training split's own inputs before the preset's supervised training, for any backbone (``pretrain=spt``)."""
