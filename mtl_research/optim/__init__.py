"""Optimizers: the model's (`model_optimizer.build`: Keras Adam/AdamW/SGD and the
learning-rate schedule, with `adam.Adam`'s once-per-step bias corrections) and
the hand-written Adam a balancer trains its own variables with (`state_adam`).

Both Adam variants do Keras's arithmetic; `scripts/benchmark.py` measures
whether the hand-written parts still pay (`adam_ours_vs_keras_<mode>`).
"""
