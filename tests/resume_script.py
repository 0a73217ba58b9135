"""Run by test_train.py in a subprocess: train a small BPR model with dropout, print final metrics as JSON.

With MMREC_TEST_KILL_AT_STEP=N in the environment the process SIGKILLs itself at optimiser step N, as a
crash or a pre-empted job would die: no cleanup, no chance to save.
"""
import json
import os
import signal
import sys

import torch
import torch.nn.functional as F

from conftest import random_interactions
from mmrec.evaluate import evaluate
from mmrec.fusion.baselines import BPRConfig, BPRMF
from mmrec.splits import leave_last_out
from mmrec.train import TrainConfig


class DropoutBPR(BPRMF):
    """BPR with dropout on the user vectors, so the resumed run also needs the restored RNG state."""

    steps = 0

    def training_step(self, batch):
        DropoutBPR.steps += 1
        if DropoutBPR.steps == int(os.environ.get("MMREC_TEST_KILL_AT_STEP", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        u = F.dropout(self.user_emb[batch["users"]], p=0.2, training=True)
        p, n = self.item_emb[batch["pos"]], self.item_emb[batch["neg"]]
        return {"loss": -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()}


def main(checkpoint_dir: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(7)  # the initial weights: the same in every run of this script
    split = leave_last_out(random_interactions(n_users=80, n_items=40, per_user=9, seed=3))
    model = DropoutBPR(BPRConfig(dim=8), split.train.n_users, split.train.n_items)
    config = TrainConfig(epochs=4, batch_size=64, lr=0.05, seed=7, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=3, progress=False, patience=10,
                         early_stop_metric="recall@5")
    result = model.fit(split.train, train_config=config,
                       evaluate_fn=lambda m: evaluate(m, split, on="valid", ks=(5,)).metrics)
    test = evaluate(model, split, on="test", ks=(5, 10)).metrics
    print(json.dumps({"test": test, "best_epoch": result.best_epoch, "global_step": result.global_step,
                      "resumed_from": result.resumed_from,
                      "valid_history": [h["valid"]["recall@5"] for h in result.history],
                      "weights": model.user_emb.detach().sum().item()}))


if __name__ == "__main__":
    main(sys.argv[1])
