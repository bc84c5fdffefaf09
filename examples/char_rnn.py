"""Character-level language model (char-rnn) on fastrnn's LSTM / GRU / RNN.

Trains a next-character model on a text corpus with truncated backpropagation through time: the
corpus is cut into ``--batch-size`` parallel streams, each step reads the next ``--bptt``
characters of every stream and starts from the hidden state the previous chunk ended in
(detached, so gradients stop at the chunk boundary). Gradients are clipped by norm. At the end it
reports validation loss and bits per character, and samples text from a seed string with a
temperature. Checkpoints hold the weights, optimizer, vocabulary and model configuration.

Default corpus: the Python standard library's own source files (found through ``sysconfig``), so
it runs offline on any machine; ``--text FILE`` trains on your own text instead.

    python examples/char_rnn.py                          # a few minutes on a CPU
    python examples/char_rnn.py --steps 3000 --hidden 512 --save ckpt.pt
    python examples/char_rnn.py --resume ckpt.pt --sample-only --seed-text "def " --temperature 0.5
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sysconfig
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fastrnn

try:
    from ._common import Progress, add_common_args, print_metrics, setup
except ImportError:  # run as a script: python examples/char_rnn.py
    from _common import Progress, add_common_args, print_metrics, setup

LAYERS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}
SKIP_DIRS = {"site-packages", "test", "tests", "__pycache__", "encodings", "pydoc_data"}


# --------------------------------------------------------------------------------------- data


def default_corpus_roots() -> List[str]:
    """Where to find text on every machine: the stdlib sources, then torch's and fastrnn's."""
    return [
        sysconfig.get_paths()["stdlib"],
        os.path.dirname(torch.__file__),
        os.path.dirname(fastrnn.__file__),
    ]


def load_default_corpus(max_chars: int, seed: int = 0) -> Tuple[str, str]:
    """Up to ``max_chars`` characters of Python source, files in a seeded shuffled order."""
    for root in default_corpus_roots():
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            # Skip installed third-party packages, test suites (odd encodings, huge data) and
            # generated tables (codec maps, pydoc's topic strings), which are not code.
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
        random.Random(seed).shuffle(files)
        parts, total = [], 0
        for path in files:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            parts.append(text)
            total += len(text)
            if total >= max_chars:
                break
        if total > 0:
            return "".join(parts)[:max_chars], f"{len(parts)} .py files under {root}"
    raise SystemExit("no Python source files found for the default corpus; pass --text FILE")


class Vocab:
    """Characters <-> indices. Characters not in the vocabulary encode as ``fallback``."""

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.index = {ch: i for i, ch in enumerate(chars)}
        self.fallback = self.index.get(" ", 0)

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        return torch.tensor([self.index.get(ch, self.fallback) for ch in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def as_streams(data: Tensor, batch_size: int) -> Tensor:
    """(N,) -> (batch_size, N // batch_size): row b is the b-th contiguous slice of the text."""
    length = data.numel() // batch_size
    if length < 2:
        raise SystemExit(f"corpus too small for --batch-size {batch_size}")
    return data[: length * batch_size].view(batch_size, length)


# -------------------------------------------------------------------------------------- model


class CharRNN(nn.Module):
    """Embedding -> fastrnn recurrent layers -> linear read-out to next-character logits."""

    def __init__(self, vocab_size: int, embed: int, hidden: int, layers: int, cell: str = "lstm",
                 dropout: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        self.config = dict(vocab_size=vocab_size, embed=embed, hidden=hidden, layers=layers, cell=cell,
                           dropout=dropout)
        self.embed = nn.Embedding(vocab_size, embed)
        self.rnn = LAYERS[cell](embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0,
                                backend=backend)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: Tensor, state=None):
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state


def detach_state(state):
    """Cut the graph at a chunk boundary but keep the values (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


# ------------------------------------------------------------------------ checkpoint, sampling


def save_checkpoint(path: str, model: CharRNN, vocab: Vocab, optimizer=None, step: int = 0) -> None:
    payload = {"model": model.state_dict(), "config": model.config, "chars": vocab.chars, "step": step}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str, device, backend: str = "auto") -> Tuple[CharRNN, Vocab, dict]:
    payload = torch.load(path, map_location=device, weights_only=True)
    model = CharRNN(**payload["config"], backend=backend).to(device)
    model.load_state_dict(payload["model"])
    return model, Vocab(payload["chars"]), payload


@torch.no_grad()
def sample(model: CharRNN, vocab: Vocab, seed_text: str, length: int, temperature: float = 1.0,
           generator: Optional[torch.Generator] = None) -> str:
    """Continue ``seed_text`` by ``length`` characters. ``temperature`` 0 picks the most likely
    character each step (greedy); larger values flatten the distribution, smaller sharpen it."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    seed_ids = vocab.encode(seed_text or "\n").to(device)
    logits, state = model(seed_ids[None], None)  # read the whole seed in one call
    last = logits[0, -1]
    out: List[int] = []
    for _ in range(length):
        if temperature <= 0:
            nxt = last.argmax()
        else:
            probs = torch.softmax(last.float() / temperature, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator)[0].to(device)
        out.append(int(nxt))
        logits, state = model(nxt.view(1, 1), state)  # one step, carrying the state
        last = logits[0, -1]
    model.train(was_training)
    return vocab.decode(out)


# ----------------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate(model: CharRNN, streams: Tensor, bptt: int, max_chunks: int, amp) -> float:
    """Mean next-character cross-entropy (nats) over up to ``max_chunks`` chunks of ``streams``."""
    model.eval()
    state, total, count = None, 0.0, 0
    for start in range(0, streams.shape[1] - 1, bptt)[:max_chunks]:
        chunk = streams[:, start : start + bptt + 1]
        with amp():
            logits, state = model(chunk[:, :-1], state)
        total += F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
        count += chunk[:, 1:].numel()
    model.train()
    return total / max(count, 1)


def autocast_settings(device: torch.device, enabled: bool):
    """(context factory, GradScaler or None): bf16 where supported, else fp16 with loss scaling."""
    if not enabled:
        return (lambda: torch.autocast(device.type, enabled=False)), None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--text", metavar="FILE", help="train on this UTF-8 text file instead of the default corpus")
    data.add_argument("--max-chars", type=int, default=1_000_000, help="use at most this many characters")
    data.add_argument("--val-fraction", type=float, default=0.05, help="tail of the text held out for validation")
    model = p.add_argument_group("model")
    model.add_argument("--cell", choices=sorted(LAYERS), default="lstm")
    model.add_argument("--embed", type=int, default=64)
    model.add_argument("--hidden", type=int, default=256)
    model.add_argument("--layers", type=int, default=2)
    model.add_argument("--dropout", type=float, default=0.0, help="between recurrent layers")
    train = p.add_argument_group("training")
    train.add_argument("--steps", type=int, default=600, help="optimizer steps")
    train.add_argument("--batch-size", type=int, default=32, help="parallel text streams")
    train.add_argument("--bptt", type=int, default=64, help="characters per chunk (truncated BPTT length)")
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--clip", type=float, default=1.0, help="max gradient norm (0: no clipping)")
    train.add_argument("--eval-chunks", type=int, default=20, help="validation chunks at the end")
    train.add_argument("--amp", action="store_true", help="torch.autocast (bf16; fp16 + loss scaling on "
                       "GPUs without bf16)")
    train.add_argument("--compile", action="store_true", help="torch.compile the model for training "
                       "(compile time grows with --bptt: dynamo unrolls the time loop)")
    ckpt = p.add_argument_group("checkpoints and sampling")
    ckpt.add_argument("--save", metavar="PATH", help="save a checkpoint here at the end (and every --save-every)")
    ckpt.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (0: only at the end)")
    ckpt.add_argument("--resume", metavar="PATH", help="load model, optimizer and vocabulary from a checkpoint")
    ckpt.add_argument("--sample-only", action="store_true", help="with --resume: only sample, do not train")
    ckpt.add_argument("--seed-text", default="def ", help="text the sample starts from")
    ckpt.add_argument("--sample-chars", type=int, default=300, help="characters to sample (0: none)")
    ckpt.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0: greedy)")
    add_common_args(p)
    return p


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = build_parser().parse_args(argv)
    device, say = setup(args)

    # Model and vocabulary: from a checkpoint, or fresh from the corpus.
    payload = None
    if args.resume:
        model, vocab, payload = load_checkpoint(args.resume, device, args.backend)
        say(f"resumed {args.resume} at step {payload['step']}: {model.config}")
    elif args.sample_only:
        raise SystemExit("--sample-only needs --resume CHECKPOINT")
    metrics: Dict[str, object] = {}
    if not args.sample_only:
        if args.text:
            with open(args.text, encoding="utf-8", errors="replace") as f:
                text, source = f.read()[: args.max_chars], args.text
        else:
            text, source = load_default_corpus(args.max_chars, args.seed)
        if payload is None:
            vocab = Vocab.from_text(text)
            model = CharRNN(len(vocab), args.embed, args.hidden, args.layers, args.cell, args.dropout,
                            args.backend).to(device)
        say(f"corpus: {len(text):,} characters from {source}; vocabulary {len(vocab)}")
        data = vocab.encode(text)
        n_val = max(int(len(data) * args.val_fraction), args.bptt + 1)
        train_streams = as_streams(data[:-n_val], args.batch_size).to(device)
        val_streams = as_streams(data[-n_val:], min(args.batch_size, n_val // (args.bptt + 1) or 1)).to(device)
        metrics = train(model, vocab, train_streams, val_streams, args, device, payload, say)
    else:
        metrics["step"] = payload["step"]

    if args.sample_chars > 0:
        generator = torch.Generator().manual_seed(args.seed)
        text = sample(model, vocab, args.seed_text, args.sample_chars, args.temperature, generator)
        metrics["sample"] = args.seed_text + text
        say(f"--- sample (temperature {args.temperature}) ---\n{args.seed_text}{text}\n---")
    print_metrics("char-rnn results:", {k: v for k, v in metrics.items() if k not in ("sample", "history")})
    metrics["model"], metrics["vocab"] = model, vocab
    return metrics


def train(model: CharRNN, vocab: Vocab, train_streams: Tensor, val_streams: Tensor, args, device, payload, say):
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_step = 0
    if payload is not None and "optimizer" in payload:
        optimizer.load_state_dict(payload["optimizer"])
        start_step = payload["step"]
    amp, scaler = autocast_settings(device, args.amp)
    step_fn = torch.compile(model) if args.compile else model
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {args.cell if payload is None else model.config['cell']} {model.config}, {n_params:,} parameters")

    history: List[float] = []
    state, position, smoothed = None, 0, None
    chars = 0
    progress = Progress(args.steps, "train", enabled=not args.quiet)
    t0 = time.perf_counter()
    for step in range(start_step, start_step + args.steps):
        if position + args.bptt + 1 > train_streams.shape[1]:  # end of the text: start over, fresh state
            state, position = None, 0
        chunk = train_streams[:, position : position + args.bptt + 1]
        position += args.bptt
        with amp():
            logits, state = step_fn(chunk[:, :-1], state)
            loss = F.cross_entropy(logits.float().flatten(0, 1), chunk[:, 1:].flatten())
        state = detach_state(state)  # carry the values into the next chunk, not the graph
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        value = loss.item()
        history.append(value)
        chars += chunk[:, 1:].numel()
        smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
        progress.update(1, loss=smoothed)
        if args.save and args.save_every and (step + 1) % args.save_every == 0:
            save_checkpoint(args.save, model, vocab, optimizer, step + 1)
    progress.close()
    seconds = time.perf_counter() - t0
    if args.save:
        save_checkpoint(args.save, model, vocab, optimizer, start_step + args.steps)
        say(f"saved {args.save}")

    val_loss = evaluate(model, val_streams, args.bptt, args.eval_chunks, amp)
    tail = history[-max(len(history) // 10, 1):]
    return {
        "step": start_step + args.steps,
        "train_loss_first": history[0],
        "train_loss_last": sum(tail) / len(tail),
        "val_loss": val_loss,
        "val_bits_per_char": val_loss / math.log(2),
        "uniform_bits_per_char": math.log2(len(vocab)),
        "train_chars_per_s": chars / seconds,
        "history": history,
    }


if __name__ == "__main__":
    main()
