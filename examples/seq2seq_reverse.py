"""Encoder-decoder sequence-to-sequence on fastrnn: learn to reverse digit strings.

The source is a string of 1 to ``--max-len`` random digits; the target is the same string
reversed, then an end-of-sequence token. A batch holds strings of different lengths:

* the encoder (``fastrnn.GRU`` or ``fastrnn.LSTM``, optionally bidirectional) reads the padded
  batch as a ``PackedSequence``, so padding never enters its state, and hands its final state to
  the decoder;
* the decoder is a cell (``fastrnn.GRUCell`` or ``fastrnn.LSTMCell``) run one step at a time.
  In training it is fed the true previous token (teacher forcing; ``--teacher-forcing 0.5`` feeds
  its own prediction half of the time), and the loss is masked so padded target steps count for
  nothing;
* evaluation decodes greedily, step by step, from the start token until the end token, and
  reports exact-match accuracy (the whole string right) and per-token accuracy on held-out strings.

    python examples/seq2seq_reverse.py                   # a few minutes on a CPU
    python examples/seq2seq_reverse.py --max-len 12 --hidden 256 --steps 4000
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn

try:
    from ._common import Progress, add_common_args, print_metrics, setup
except ImportError:  # run as a script: python examples/seq2seq_reverse.py
    from _common import Progress, add_common_args, print_metrics, setup

PAD, SOS, EOS = 0, 1, 2
DIGIT0 = 3  # token of digit d is DIGIT0 + d
VOCAB = DIGIT0 + 10


# --------------------------------------------------------------------------------------- data


def make_batch(batch_size: int, min_len: int, max_len: int, rng: random.Random) -> Tuple[Tensor, Tensor, Tensor]:
    """-> src (B, max_len) padded with PAD, src_lengths (B,), tgt (B, max_len + 1): reversed + EOS, padded."""
    lengths = [rng.randint(min_len, max_len) for _ in range(batch_size)]
    src = torch.full((batch_size, max_len), PAD, dtype=torch.long)
    tgt = torch.full((batch_size, max_len + 1), PAD, dtype=torch.long)
    for b, n in enumerate(lengths):
        digits = [DIGIT0 + rng.randrange(10) for _ in range(n)]
        src[b, :n] = torch.tensor(digits)
        tgt[b, :n] = torch.tensor(digits[::-1])
        tgt[b, n] = EOS
    return src, torch.tensor(lengths), tgt


def to_text(tokens) -> str:
    out = []
    for t in tokens:
        if t == EOS:
            break
        out.append(str(t - DIGIT0) if t >= DIGIT0 else "?")
    return "".join(out)


# -------------------------------------------------------------------------------------- model


class Seq2Seq(nn.Module):
    def __init__(self, hidden: int, embed: int = 32, cell: str = "gru", bidirectional: bool = True,
                 encoder_layers: int = 1, backend: str = "auto") -> None:
        super().__init__()
        self.cell_kind = cell
        self.embed = nn.Embedding(VOCAB, embed, padding_idx=PAD)
        encoder = {"gru": fastrnn.GRU, "lstm": fastrnn.LSTM}[cell]
        self.encoder = encoder(embed, hidden, encoder_layers, batch_first=True, bidirectional=bidirectional,
                               backend=backend)
        directions = 2 if bidirectional else 1
        # The decoder starts from the encoder's last layer, both directions merged by a linear map.
        self.bridge = nn.Linear(directions * hidden, hidden) if directions > 1 else nn.Identity()
        decoder = {"gru": fastrnn.GRUCell, "lstm": fastrnn.LSTMCell}[cell]
        self.decoder = decoder(embed, hidden, backend=backend)
        self.out = nn.Linear(hidden, VOCAB)
        self.directions = directions

    def encode(self, src: Tensor, lengths: Tensor):
        packed = pack_padded_sequence(self.embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, state = self.encoder(packed)

        def merge(s: Tensor) -> Tensor:  # (layers * dirs, B, H) -> (B, H) of the last layer
            last = s[-self.directions:]
            return torch.tanh(self.bridge(torch.cat(list(last), dim=-1))) if self.directions > 1 else last[0]

        if isinstance(state, tuple):
            return tuple(merge(s) for s in state)
        return merge(state)

    def step(self, token: Tensor, state):
        """One decoder step: previous token (B,) and state -> logits (B, VOCAB), new state."""
        state = self.decoder(self.embed(token), state)
        h = state[0] if isinstance(state, tuple) else state
        return self.out(h), state

    def forward(self, src: Tensor, lengths: Tensor, tgt: Tensor, teacher_forcing: float = 1.0) -> Tensor:
        """Training pass: logits (B, T_tgt, VOCAB); step t is fed tgt[:, t-1] (or SOS) with
        probability ``teacher_forcing``, else the model's own previous prediction."""
        state = self.encode(src, lengths)
        token = torch.full_like(tgt[:, 0], SOS)
        logits = []
        for t in range(tgt.shape[1]):
            step_logits, state = self.step(token, state)
            logits.append(step_logits)
            if teacher_forcing >= 1.0 or random.random() < teacher_forcing:
                token = tgt[:, t]
            else:
                token = step_logits.argmax(-1)
        return torch.stack(logits, dim=1)

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, lengths: Tensor, max_steps: int) -> Tensor:
        """Decode step by step, feeding back the argmax, until every row has emitted EOS."""
        state = self.encode(src, lengths)
        token = torch.full((src.shape[0],), SOS, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_steps):
            logits, state = self.step(token, state)
            token = logits.argmax(-1)
            out.append(torch.where(done, torch.full_like(token, PAD), token))
            done |= token == EOS
            if bool(done.all()):
                break
        return torch.stack(out, dim=1)


def masked_loss(logits: Tensor, tgt: Tensor) -> Tensor:
    """Cross-entropy over real target steps only (the EOS included, the padding excluded)."""
    mask = tgt != PAD
    losses = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)
    return (losses * mask).sum() / mask.sum()


@torch.no_grad()
def evaluate(model: Seq2Seq, src: Tensor, lengths: Tensor, tgt: Tensor) -> Dict[str, float]:
    model.eval()
    pred = model.greedy_decode(src, lengths, max_steps=tgt.shape[1])
    model.train()
    width = tgt.shape[1]
    pred = F.pad(pred, (0, width - pred.shape[1]), value=PAD)
    mask = tgt != PAD
    token_ok = (pred == tgt) | ~mask
    exact = token_ok.all(dim=1).float().mean().item()
    token_acc = ((pred == tgt) & mask).sum().item() / mask.sum().item()
    return {"exact_match": exact, "token_accuracy": token_acc, "pred": pred}


# ----------------------------------------------------------------------------------- training


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--min-len", type=int, default=1, help="shortest source string")
    p.add_argument("--max-len", type=int, default=8, help="longest source string")
    p.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--encoder-layers", type=int, default=1)
    p.add_argument("--unidirectional", action="store_true", help="one-direction encoder (default: bidirectional)")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    p.add_argument("--teacher-forcing", type=float, default=1.0,
                   help="probability of feeding the true previous token in training")
    p.add_argument("--eval-size", type=int, default=1000, help="held-out strings for the final accuracy")
    p.add_argument("--eval-every", type=int, default=0, help="steps between accuracy checks (0: only at the end)")
    add_common_args(p)
    return p


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = build_parser().parse_args(argv)
    if not 1 <= args.min_len <= args.max_len:
        raise SystemExit("need 1 <= --min-len <= --max-len")
    device, say = setup(args)

    model = Seq2Seq(args.hidden, args.embed, args.cell, not args.unidirectional, args.encoder_layers,
                    args.backend).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_rng = random.Random(args.seed)
    # Held-out strings from their own generator (collisions with training strings are possible for
    # short lengths, as there are only 10^n strings of length n; long ones are almost all new).
    eval_batch = [t.to(device) for t in make_batch(args.eval_size, args.min_len, args.max_len,
                                                   random.Random(args.seed + 10_000))]
    say(f"model: {sum(p.numel() for p in model.parameters()):,} parameters; task: reverse "
        f"{args.min_len}-{args.max_len} digits")

    history: List[float] = []
    progress = Progress(args.steps, "train", enabled=not args.quiet)
    t0 = time.perf_counter()
    smoothed = None
    acc = None
    for step in range(args.steps):
        src, lengths, tgt = (t.to(device) for t in make_batch(args.batch_size, args.min_len, args.max_len, train_rng))
        logits = model(src, lengths, tgt, args.teacher_forcing)
        loss = masked_loss(logits, tgt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        history.append(loss.item())
        smoothed = history[-1] if smoothed is None else 0.95 * smoothed + 0.05 * history[-1]
        if args.eval_every and (step + 1) % args.eval_every == 0:
            acc = evaluate(model, *eval_batch)["exact_match"]
        progress.update(1, loss=smoothed, **({} if acc is None else {"exact": acc}))
    progress.close()
    seconds = time.perf_counter() - t0

    result = evaluate(model, *eval_batch)
    src, lengths, tgt = eval_batch
    for b in range(min(3, src.shape[0])):
        say(f"  {to_text(src[b, : lengths[b]].tolist()):>{args.max_len}} -> "
            f"{to_text(result['pred'][b].tolist()):<{args.max_len}} (want {to_text(tgt[b].tolist())})")
    tail = history[-max(len(history) // 10, 1):]
    metrics: Dict[str, object] = {
        "steps": args.steps,
        "train_loss_first": history[0] if history else float("nan"),
        "train_loss_last": sum(tail) / len(tail) if tail else float("nan"),
        "exact_match": result["exact_match"],
        "token_accuracy": result["token_accuracy"],
        "train_seconds": seconds,
    }
    print_metrics("seq2seq reverse results (greedy decoding, held-out strings):", metrics)
    metrics["history"], metrics["model"] = history, model
    return metrics


if __name__ == "__main__":
    main()
