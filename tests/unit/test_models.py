"""The architectures are the seed models, working: shapes, parameter counts, registry wiring."""
import pytest
import torch

from model_defs.architectures import FashionMLP, LeNet5, MnistNet
from model_defs.registry import MODELS, get_spec


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shape_matches_registry(name):
    spec = get_spec(name)
    net = spec.build().eval()
    out = net(torch.zeros(4, 1, *spec.input_size))
    assert out.shape == (4, len(spec.labels))


@pytest.mark.parametrize("cls, params", [
    # conv 1->6 3x3 (60) + conv 6->16 3x3 (880) + 576*120+120 + 120*84+84 + 84*10+10
    (LeNet5, 60 + 880 + 69_240 + 10_164 + 850),
    # conv 1->10 5x5 (260) + conv 10->20 5x5 (5,020) + 320*50+50 + 50*10+10
    (MnistNet, 260 + 5_020 + 16_050 + 510),
    # 784*512+512 + 512*512+512 + 512*10+10
    (FashionMLP, 401_920 + 262_656 + 5_130),
])
def test_parameter_count_is_the_seed_architecture(cls, params):
    assert sum(p.numel() for p in cls().parameters()) == params


def test_mnist_net_ends_in_log_softmax_like_the_seed():
    out = MnistNet().eval()(torch.randn(3, 1, 28, 28))
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(3), atol=1e-5)


def test_mnist_net_dropout_is_a_training_choice_only():
    """The registry trains mnist_net with 25% dropout: the same weights, the same answers at inference."""
    net = get_spec("mnist_net").build()
    assert net.dropout == 0.25 and net.conv2_drop.p == 0.25
    classic = MnistNet()
    classic.load_state_dict(net.state_dict())
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(net.eval()(x), classic.eval()(x))


def test_lenet_rejects_the_wrong_input_size_loudly():
    with pytest.raises(RuntimeError):
        LeNet5()(torch.zeros(1, 1, 28, 28))


def test_registry_is_complete_and_consistent():
    assert set(MODELS) == {"lenet5", "mnist_net", "fashion_mlp"}
    for spec in MODELS.values():
        assert len(spec.labels) == 10 and len(set(spec.labels)) == 10
        assert spec.preprocessing in ("digit", "fashion")
        assert spec.metadata()["input_size"] == list(spec.input_size)
    assert get_spec("fashion_mlp").labels[9] == "Ankle boot"
    with pytest.raises(KeyError, match="known models"):
        get_spec("resnet")


def test_the_registry_settings_and_makefile_list_the_same_models():
    """The registry is the source of truth; serving settings and the Makefile's MODELS follow it."""
    import re

    from settings.model_serving import SERVING
    from tests.support.paths import REPO

    makefile = (REPO / "Makefile").read_text()
    make_models = re.search(r"^MODELS := (.+)$", makefile, re.MULTILINE).group(1).split()
    assert make_models == list(MODELS)
    assert list(SERVING) == list(MODELS)
