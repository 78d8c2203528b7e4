"""Sample from a stage-2 checkpoint: `python sample.py ckpt=PATH n_per_class=100 out=samples.npz`."""

import hydra
from omegaconf import DictConfig

from tinyldm.tasks import sample


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    sample.run(cfg)


if __name__ == "__main__":
    main()
