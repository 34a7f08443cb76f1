"""Building and checking params: the typed builder (`build`), the tree of every group (`params`), the groups of
the stages that own no config module elsewhere (`fid`, `sample`, `guide`: one module each, so that a stage depends on
its own group alone) and the hook that hands the built tree to the nodes (`hooks`). Imports nothing itself, so that a
module reaching for the builder does not pull in (nor make DVC follow) every model."""
