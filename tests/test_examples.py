"""The examples under examples/ run end to end with tiny settings and learn: each test calls the
example's ``main(argv)`` in-process (so argument parsing is covered too) and checks that the
training loss falls clearly below where it started, plus the example's own mechanics
(checkpoints and sampling, loss masking, packing, the naive baseline)."""

import math
import random

import pytest
import torch

from examples import char_rnn, forecast, seq2seq_reverse


@pytest.fixture(autouse=True)
def _one_thread():
    # The examples get --threads 1 (tiny models: threads only add synchronisation); restore the
    # session's setting afterwards so other tests are unaffected.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _falls(history, factor):
    """Mean of the last fifth of the losses is below ``factor`` times the mean of the first 3."""
    head = sum(history[:3]) / 3
    n = max(len(history) // 5, 1)
    tail = sum(history[-n:]) / n
    assert math.isfinite(tail)
    assert tail < factor * head, f"loss did not fall enough: first {head:.4f}, last {tail:.4f}"


# ------------------------------------------------------------------------------------ char-rnn

CHAR_TINY = ["--max-chars", "30000", "--embed", "16", "--hidden", "48", "--layers", "2", "--steps", "40",
             "--bptt", "16", "--batch-size", "16", "--lr", "1e-2", "--eval-chunks", "2", "--sample-chars", "20",
             "--quiet", "--threads", "1", "--device", "cpu"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_char_rnn_learns(cell):
    m = char_rnn.main(CHAR_TINY + ["--cell", cell])
    _falls(m["history"], 0.8)
    # Better than a uniform guess over the vocabulary on held-out text.
    assert m["val_bits_per_char"] < m["uniform_bits_per_char"] - 1.0
    assert m["sample"].startswith("def ") and len(m["sample"]) == len("def ") + 20


def test_char_rnn_learns_under_autocast():
    m = char_rnn.main(CHAR_TINY + ["--amp"])
    _falls(m["history"], 0.8)
    assert all(p.dtype == torch.float32 for p in m["model"].parameters())


def test_char_rnn_checkpoint_resume_and_sample(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    first = char_rnn.main(CHAR_TINY + ["--steps", "10", "--save", path])
    greedy = char_rnn.sample(first["model"], first["vocab"], "import ", 25, temperature=0)
    # Sampling from the saved checkpoint reproduces the trained model's greedy continuation.
    loaded = char_rnn.main(["--resume", path, "--sample-only", "--seed-text", "import ", "--sample-chars", "25",
                            "--temperature", "0", "--quiet", "--device", "cpu"])
    assert loaded["sample"] == "import " + greedy
    assert loaded["step"] == 10
    for (name, a), (_, b) in zip(first["model"].state_dict().items(), loaded["model"].state_dict().items()):
        assert torch.equal(a, b), name
    # Resuming training continues the step count (and the optimizer state) where it stopped.
    resumed = char_rnn.main(CHAR_TINY + ["--steps", "5", "--resume", path])
    assert resumed["step"] == 15


def test_char_rnn_sampling_temperature():
    torch.manual_seed(0)
    vocab = char_rnn.Vocab("abcdef")
    model = char_rnn.CharRNN(len(vocab), 8, 16, 1)
    greedy = char_rnn.sample(model, vocab, "ab", 30, temperature=0)
    # A tiny temperature is (numerically) greedy; seeded sampling is reproducible.
    assert char_rnn.sample(model, vocab, "ab", 30, 1e-4, torch.Generator().manual_seed(1)) == greedy
    hot = [char_rnn.sample(model, vocab, "ab", 30, 5.0, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert hot[0] == hot[1] and hot[0] != hot[2]
    assert set("".join(hot)) <= set(vocab.chars)


def test_char_rnn_truncated_bptt_carries_detached_state():
    """Two chunks with the carried (detached) state equal one pass over the whole sequence."""
    torch.manual_seed(0)
    model = char_rnn.CharRNN(7, 5, 6, 2).double()
    tokens = torch.randint(0, 7, (3, 10))
    whole, _ = model(tokens)
    a, state = model(tokens[:, :4])
    state = char_rnn.detach_state(state)
    assert all(not s.requires_grad for s in state)
    b, _ = model(tokens[:, 4:], state)
    torch.testing.assert_close(torch.cat([a, b], dim=1), whole, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------- seq2seq

S2S_TINY = ["--max-len", "4", "--embed", "8", "--hidden", "32", "--steps", "150", "--batch-size", "32",
            "--eval-size", "64", "--quiet", "--threads", "1", "--device", "cpu"]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_seq2seq_learns(cell):
    m = seq2seq_reverse.main(S2S_TINY + ["--cell", cell])
    _falls(m["history"], 0.6)
    assert 0.0 <= m["exact_match"] <= 1.0 and m["token_accuracy"] > 0.2


def test_seq2seq_scheduled_sampling_and_unidirectional():
    m = seq2seq_reverse.main(S2S_TINY + ["--teacher-forcing", "0.5", "--unidirectional", "--encoder-layers", "2"])
    _falls(m["history"], 0.7)


def test_seq2seq_loss_ignores_padding():
    torch.manual_seed(0)
    src, lengths, tgt = seq2seq_reverse.make_batch(6, 1, 5, random.Random(0))
    assert (tgt == seq2seq_reverse.PAD).any()
    logits = torch.randn(*tgt.shape, seq2seq_reverse.VOCAB)
    changed = logits.clone()
    changed[tgt == seq2seq_reverse.PAD] = 100 * torch.randn_like(changed[tgt == seq2seq_reverse.PAD])
    torch.testing.assert_close(seq2seq_reverse.masked_loss(changed, tgt), seq2seq_reverse.masked_loss(logits, tgt))
    # ...and equals the mean cross-entropy over the real target tokens.
    real = tgt != seq2seq_reverse.PAD
    expected = torch.nn.functional.cross_entropy(logits[real], tgt[real])
    torch.testing.assert_close(seq2seq_reverse.masked_loss(logits, tgt), expected)


def test_seq2seq_encoder_ignores_padding():
    """The packed encoder's state does not depend on how much padding follows each string."""
    torch.manual_seed(0)
    model = seq2seq_reverse.Seq2Seq(16, 8, "lstm").double()
    src, lengths, _ = seq2seq_reverse.make_batch(5, 1, 6, random.Random(1))
    wider = torch.nn.functional.pad(src, (0, 3), value=seq2seq_reverse.PAD)
    for a, b in zip(model.encode(src, lengths), model.encode(wider, lengths)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_seq2seq_greedy_decode_matches_teacher_forced_argmax():
    """Greedy decoding fed its own argmax equals the teacher-forced pass fed those same tokens."""
    torch.manual_seed(0)
    model = seq2seq_reverse.Seq2Seq(16, 8, "gru").double().eval()
    src, lengths, tgt = seq2seq_reverse.make_batch(4, 2, 5, random.Random(2))
    pred = model.greedy_decode(src, lengths, max_steps=6)
    logits = model(src, lengths, pred, teacher_forcing=1.0)
    steps = pred.shape[1]
    done = torch.zeros(4, dtype=torch.bool)
    for t in range(steps):
        argmax = logits[:, t].argmax(-1)
        assert torch.equal(pred[:, t][~done], argmax[~done])
        done |= argmax == seq2seq_reverse.EOS


# ------------------------------------------------------------------------------------ forecast

FC_TINY = ["--length", "3000", "--context", "16", "--horizon", "4", "--hidden", "24", "--steps", "50",
           "--batch-size", "32", "--lr", "1e-2", "--eval-windows", "64", "--quiet", "--threads", "1",
           "--device", "cpu"]


@pytest.mark.parametrize("extra", [[], ["--cell", "gru", "--unidirectional", "--layers", "1"]],
                         ids=["lstm_bi_stacked", "gru_uni"])
def test_forecast_learns(extra):
    m = forecast.main(FC_TINY + extra)
    _falls(m["history"], 0.7)
    for key in ("one_step_mse", "multi_step_mse", "rollout_mse", "multi_step_naive_mse"):
        assert math.isfinite(m[key]) and m[key] > 0
    # Even tiny training beats repeating the last value over the whole horizon.
    assert m["multi_step_skill"] > 0


def test_forecast_windows_and_naive_baseline():
    series = torch.arange(40, dtype=torch.float32).view(20, 2)
    x, y = forecast.windows(series, torch.tensor([0, 5]), context=3, horizon=2)
    assert torch.equal(x[1], series[5:8]) and torch.equal(y[1], series[8:10])
    model = forecast.Forecaster(2, 8, 2, horizon=2)
    with torch.no_grad():  # zero heads: the model's forecast is exactly the naive one
        for head in (model.one_step, model.multi_step):
            head.weight.zero_()
            head.bias.zero_()
    m = forecast.evaluate(model, x, y)
    assert m["multi_step_mse"] == pytest.approx(m["multi_step_naive_mse"])
    assert m["one_step_skill"] == pytest.approx(0.0) and m["rollout_skill"] == pytest.approx(0.0)
