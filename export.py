"""Export a stage-2 checkpoint as a model folder: `python export.py ckpt=PATH out=DIR` (docs/sharing.md)."""

import hydra
from omegaconf import DictConfig

from tinyldm.tasks import export


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export.run(cfg)


if __name__ == "__main__":
    main()
