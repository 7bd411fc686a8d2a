"""S5 (ours, ``lra_bench.models.ssm.s5.S5SSM``) beside the ``s5-pytorch`` package's ``s5.S5``, weights matched.

Both map u: (B, L, D) -> (B, L, D) with the bidirectional S5 SSM of S5's IMDB script (P 192 in J 12 HiPPO-N
blocks, ZOH, C lecun_normal). s5-pytorch 0.2.1 differs from the official S5 in one detail that the matching
absorbs: it keeps all P complex states (no conjugate symmetry) and returns Re(C x) rather than 2 Re(C x) over
P/2 states. Its weights are set to the conjugate-pair expansion of ours (Lambda, B, C, log_step each
[z, conj(z)]), which gives the same function exactly; D is copied. It therefore does twice our state work,
as the package always does. Its D default init (uniform) and its ``dense`` B/C init are overwritten.
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.models.ssm.s5 import S5SSM

REFERENCE = "s5-pytorch==0.2.1"
STATE, BLOCKS = 192, 12


@torch.no_grad()
def match_weights(ours: S5SSM, theirs: nn.Module) -> None:
    """Set s5-pytorch's ``S5`` (bidirectional, P = 2 * ours.P states) to compute exactly ``ours``."""
    if not (ours.conj_sym and ours.bidirectional and len(ours.C_names) == 2):
        raise ValueError("matching needs a conjugate-symmetric, bidirectional S5SSM with C1 and C2")
    seq = theirs.seq
    lam = torch.complex(ours.Lambda_re, ours.Lambda_im)
    B = torch.view_as_complex(ours.B)
    C1, C2 = ours.c_tilde()
    seq.Lambda.copy_(torch.cat([lam, lam.conj()]))
    seq.B.copy_(torch.view_as_real(torch.cat([B, B.conj()])))
    seq.C.copy_(torch.cat([C1, C1.conj(), C2, C2.conj()], dim=-1))  # [forward states | backward states]
    seq.log_step.copy_(torch.cat([ours.log_step, ours.log_step]))
    seq.D.copy_(ours.D)


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs): the bidirectional S5 SSM at d_model channels, P = 192 in 12 blocks, same weights.
    ``length`` and ``n_heads`` do not change an S5 layer."""
    import s5  # dev-only dependency

    torch.manual_seed(seed)
    ours = S5SSM(d_model, STATE, blocks=BLOCKS, bidirectional=True, C_init="lecun_normal")
    theirs = s5.S5(d_model, state_width=STATE, block_count=BLOCKS, bidir=True)
    match_weights(ours, theirs)
    return ours, theirs
