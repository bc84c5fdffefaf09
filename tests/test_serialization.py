"""pickle / deepcopy / torch.save round trips, dtype conversions, state_dict both ways."""

import copy
import pickle

import pytest
import torch

import fastrnn
from helpers import CELLS, MODULES, assert_close, flat, make_cell_pair, make_pair, random_hx

D = torch.float64
ALL = [("module", k) for k in MODULES] + [("cell", k) for k in CELLS]
IDS = [k for _, k in ALL]


def _pair(group, kind, **kw):
    torch.manual_seed(70)
    if group == "module":
        return make_pair(kind, 5, 24, num_layers=2, bidirectional=True, **kw)
    return make_cell_pair(kind, 5, 24, **kw)


def _input(group, dtype=D):
    return torch.randn((7, 3, 5) if group == "module" else (3, 5), dtype=dtype)


def _assert_same_outputs(a, b, x):
    for u, v in zip(flat(a(x)), flat(b(x))):
        assert torch.equal(u, v)


@pytest.mark.parametrize("group,kind", ALL, ids=IDS)
def test_pickle_round_trip(group, kind):
    _, fast = _pair(group, kind)
    clone = pickle.loads(pickle.dumps(fast))
    assert type(clone) is type(fast) and repr(clone) == repr(fast)
    _assert_same_outputs(fast, clone, _input(group))


@pytest.mark.parametrize("group,kind", ALL, ids=IDS)
def test_deepcopy(group, kind):
    _, fast = _pair(group, kind)
    clone = copy.deepcopy(fast)
    x = _input(group)
    _assert_same_outputs(fast, clone, x)
    with torch.no_grad():  # independent parameters
        next(clone.parameters()).add_(1.0)
    assert not torch.equal(next(clone.parameters()), next(fast.parameters()))


@pytest.mark.parametrize("group,kind", ALL, ids=IDS)
def test_torch_save_load_whole_module(group, kind, tmp_path):
    _, fast = _pair(group, kind)
    path = tmp_path / "module.pt"
    torch.save(fast, path)
    loaded = torch.load(path, weights_only=False)
    assert type(loaded) is type(fast)
    _assert_same_outputs(fast, loaded, _input(group))
    # ... and a state_dict saved with torch.save loads with weights_only=True
    torch.save(fast.state_dict(), tmp_path / "sd.pt")
    fresh = copy.deepcopy(fast)
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True), strict=True)
    _assert_same_outputs(fast, fresh, _input(group))


@pytest.mark.parametrize("group,kind", ALL, ids=IDS)
def test_state_dict_both_ways_strict(group, kind):
    ref, fast = _pair(group, kind)
    x = _input(group)
    # torch.nn -> fastrnn was done by make_pair with strict=True; now fastrnn -> a fresh torch.nn
    torch_cls, fast_cls, extra = (MODULES if group == "module" else CELLS)[kind]
    kw = dict(num_layers=2, bidirectional=True) if group == "module" else {}
    other_ref = torch_cls(5, 24, dtype=D, **extra, **kw)
    result = other_ref.load_state_dict(fast.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for u, v in zip(flat(other_ref(x)), flat(ref(x))):
        assert torch.equal(u, v)
    other_fast = fast_cls(5, 24, dtype=D, **extra, **kw)
    other_fast.load_state_dict(ref.state_dict(), strict=True)
    assert list(other_fast.state_dict()) == list(ref.state_dict())
    for u, v in zip(flat(other_fast(x)), flat(fast(x))):
        assert torch.equal(u, v)


def test_state_dict_mismatch_is_reported():
    """A state_dict of another structure does not load silently (strict=True)."""
    fast = fastrnn.LSTM(5, 24, num_layers=2)
    with pytest.raises(RuntimeError, match="Missing key"):
        fast.load_state_dict(torch.nn.LSTM(5, 24).state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        fast.load_state_dict(torch.nn.LSTM(5, 24, num_layers=2, proj_size=3).state_dict(), strict=False)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("group,kind", ALL, ids=IDS)
def test_dtype_conversions(group, kind):
    ref, fast = _pair(group, kind)
    ref32, fast32 = ref.to(torch.float32), fast.to(torch.float32)
    assert fast32 is fast  # in place, as nn.Module.to
    assert all(p.dtype == torch.float32 for p in fast.parameters())
    x32 = _input(group, torch.float32)
    if group == "module":
        hx = random_hx(ref, 3, dtype=torch.float32)
        a, b = ref(x32, hx), fast(x32, hx)
    else:
        a, b = ref(x32), fast(x32)
    for u, v in zip(flat(b), flat(a)):
        assert u.dtype == torch.float32
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
    ref.double(), fast.double()
    assert all(p.dtype == torch.float64 for p in fast.parameters())
    x = _input(group)
    for u, v in zip(flat(fast(x)), flat(ref(x))):
        assert u.dtype == torch.float64
        assert_close(u, v)
    # Converting to float32 and back lost the same bits in both
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters()):
        assert torch.equal(p, q), name


def test_half_precision_parameters():
    fast = fastrnn.GRU(5, 8).to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    out, h = fast(torch.randn(4, 2, 5, dtype=torch.bfloat16))
    assert out.dtype == h.dtype == torch.bfloat16


class UserModel(torch.nn.Module):
    """A user's model holding every fastrnn module, as word_language_model's RNNModel holds one."""

    def __init__(self):
        super().__init__()
        self.lstm = fastrnn.LSTM(5, 8, num_layers=2, proj_size=3, dtype=D)
        self.gru = fastrnn.GRU(3, 6, bidirectional=True, dtype=D)
        self.rnn = fastrnn.RNN(12, 4, nonlinearity="relu", backend="reference", dtype=D)
        self.cells = torch.nn.ModuleList(
            [fastrnn.LSTMCell(4, 4, dtype=D), fastrnn.GRUCell(4, 4, dtype=D), fastrnn.RNNCell(4, 4, dtype=D)]
        )

    def forward(self, x):
        y = self.rnn(self.gru(self.lstm(x)[0])[0])[0][-1]
        h, _ = self.cells[0](y)
        return self.cells[2](self.cells[1](h))


def test_whole_model_loads_with_weights_only(tmp_path):
    """torch.save(model) of a user class with fastrnn modules inside loads with torch.load's
    default weights_only=True when only the user's class is allowed: fastrnn's public classes
    are on the allowlist (registered on import) and the pickle names nothing private."""
    torch.manual_seed(71)
    model = UserModel().eval()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    user_classes = [UserModel, torch.nn.ModuleList]  # what the user allows, as for torch.nn models
    assert sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)) == sorted(
        f"{c.__module__}.{c.__qualname__}" for c in user_classes)
    with pytest.raises(pickle.UnpicklingError, match="UserModel"):  # weights_only is really on
        torch.load(path)
    with torch.serialization.safe_globals(user_classes):
        loaded = torch.load(path)
    x = torch.randn(7, 2, 5, dtype=D)
    assert torch.equal(loaded(x), model(x))
    assert loaded.rnn.backend == "reference" and loaded.rnn.nonlinearity == "relu"
    assert list(loaded.state_dict()) == list(model.state_dict())


def test_registered_safe_globals_are_the_public_classes():
    """The allowlist holds the six public classes' names, each for a stand-in of that class that
    is never constructed during a load (issue 18: see fastrnn.serialization)."""
    from fastrnn.serialization import SAFE_GLOBALS

    public = {getattr(fastrnn, n) for n in ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")}
    assert set(SAFE_GLOBALS) == public
    registered = {name: obj for obj, name in
                  (g for g in torch.serialization.get_safe_globals() if isinstance(g, tuple))}
    for cls in public:
        stand_in = registered[f"{cls.__module__}.{cls.__qualname__}"]
        assert issubclass(stand_in, cls) and stand_in is not cls
    assert not public & set(torch.serialization.get_safe_globals())  # the real classes are not on it


@pytest.mark.parametrize("group,kind", ALL, ids=IDS)
def test_pickled_state_is_plain_data(group, kind):
    """No Cell (a dataclass of private functions) in the instance state; it is derived from mode."""
    _, fast = _pair(group, kind)
    assert "cell" not in vars(fast) and fast.cell.mode == fast.mode
    # A pickle of an earlier version, holding the Cell, still loads (and drops it)
    old = copy.copy(fast)
    old.__dict__["cell"] = fast.cell
    clone = pickle.loads(pickle.dumps(old))
    assert "cell" not in vars(clone)
    _assert_same_outputs(fast, clone, _input(group))
