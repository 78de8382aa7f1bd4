import pytest

from and_plugin import CURRICULA, LOSSES, MINERS, EntropyCurriculum, NeighbourhoodLoss, Registry
from and_plugin.miner import ANDMiner


def test_register_build_list():
    things = Registry("thing")

    @things.register()
    def alpha(x=1):
        return x * 10

    @things.register("beta")
    class Beta:
        def __init__(self, y):
            self.y = y

    assert things.names() == ["alpha", "beta"]
    assert things.build("alpha", x=2) == 20
    assert things.build("beta", y=3).y == 3
    assert "alpha" in things and len(things) == 2


def test_unknown_name_lists_known_ones_and_duplicates_refused():
    things = Registry("thing")
    things.register("a")(lambda: 1)
    with pytest.raises(KeyError, match="unknown thing 'b'; known things: a"):
        things.get("b")
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a")(lambda: 2)
    things.register("a", force=True)(lambda: 3)
    assert things.build("a") == 3


def test_components_are_registered_by_name():
    assert LOSSES.get("and") is NeighbourhoodLoss
    assert MINERS.get("and") is ANDMiner
    assert CURRICULA.get("entropy") is EntropyCurriculum
