"""Stable-Baselines3's PPO on CartPole, sampling through vecpg's workers.

The only change from SB3's own example is where ``SubprocVecEnv`` comes from.
Run: ``python examples/sb3_ppo.py [total_timesteps]`` (needs ``pip install 'vecpg[sb3]'``).
"""

import sys

from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from vecpg.sb3 import SubprocVecEnv  # was: from stable_baselines3.common.vec_env import ...


def main(total_timesteps: int = 100_000) -> float:
    envs = make_vec_env("CartPole-v1", n_envs=8, seed=0, vec_env_cls=SubprocVecEnv)
    # RL Zoo's CartPole hyperparameters.
    model = PPO(
        "MlpPolicy", envs, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
        n_epochs=20, learning_rate=1e-3, seed=0,
    )  # fmt: skip
    model.learn(total_timesteps=total_timesteps)
    mean_return, std_return = evaluate_policy(model, envs, n_eval_episodes=16)
    print(f"mean return {mean_return:.1f} +- {std_return:.1f} after {total_timesteps} steps")
    envs.close()
    return mean_return


if __name__ == "__main__":  # needed: the workers are started with forkserver
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
