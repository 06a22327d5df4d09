"""Regenerates tests/fixtures/pytorch.json: the learning rates PyTorch's schedulers give, as the
reference kiln-schedule is tested against. Run in any venv with torch installed:

    python scripts/pytorch_fixtures.py > tests/fixtures/pytorch.json

Each case pairs a Kiln `[schedule]` table with the equivalent PyTorch construction on
SGD(lr=base) (or Adam(lr=base), where the case says so). rates[t] is param_groups[0]['lr']
read just before the t-th optimizer.step(), with scheduler.step() (or step(metric)) after every
update; momenta[t] is the momentum (SGD's `momentum`, Adam's `betas[0]`) read at the same time,
which CyclicLR and OneCycleLR cycle unless told `cycle_momentum=False`.
"""
import json
import math

import torch
from torch.optim import SGD
from torch.optim import lr_scheduler as S

CASES = []


def case(name, toml, build, steps=60, base=0.1, metrics=None, lr_key=True, adam=False):
    CASES.append(dict(name=name, toml=toml, build=build, steps=steps, base=base, metrics=metrics, lr_key=lr_key, adam=adam))


# --- single schedules ---
case("fixed", 'kind = "fixed"', lambda o: None, steps=5)
case("constant_defaults", 'kind = "constant"', lambda o: S.ConstantLR(o))
case("constant", 'kind = "constant"\nfactor = 0.5\ntotal_iters = 3', lambda o: S.ConstantLR(o, factor=0.5, total_iters=3))
case("linear_defaults", 'kind = "linear"', lambda o: S.LinearLR(o))
case("linear", 'kind = "linear"\nstart_factor = 0.25\nend_factor = 0.75\ntotal_iters = 10',
     lambda o: S.LinearLR(o, start_factor=0.25, end_factor=0.75, total_iters=10))
case("step", 'kind = "step"\nstep_size = 3\ngamma = 0.5', lambda o: S.StepLR(o, step_size=3, gamma=0.5))
case("step_default_gamma", 'kind = "step"\nstep_size = 7', lambda o: S.StepLR(o, step_size=7), steps=40)
case("multi_step_repeated", 'kind = "multi_step"\nmilestones = [2, 5, 5, 9]',
     lambda o: S.MultiStepLR(o, milestones=[2, 5, 5, 9]), steps=15)
case("multi_step_at_zero", 'kind = "multi_step"\nmilestones = [0, 3]\ngamma = 0.5',
     lambda o: S.MultiStepLR(o, milestones=[0, 3], gamma=0.5), steps=8)
case("exponential", 'kind = "exponential"\ngamma = 0.95', lambda o: S.ExponentialLR(o, gamma=0.95), steps=300)
case("polynomial_defaults", 'kind = "polynomial"', lambda o: S.PolynomialLR(o), steps=10)
case("polynomial", 'kind = "polynomial"\ntotal_iters = 10\npower = 2', lambda o: S.PolynomialLR(o, total_iters=10, power=2.0), steps=15)
case("cosine_past_t_max", 'kind = "cosine_annealing"\nt_max = 10\neta_min = 0.001',
     lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001), steps=45)
case("cosine_to_zero", 'kind = "cosine_annealing"\nt_max = 7', lambda o: S.CosineAnnealingLR(o, T_max=7), steps=30)
case("cosine_long", 'kind = "cosine_annealing"\nt_max = 1000\neta_min = 1e-5',
     lambda o: S.CosineAnnealingLR(o, T_max=1000, eta_min=1e-5), steps=2500)
case("warm_restarts", 'kind = "cosine_annealing_warm_restarts"\nt_0 = 5',
     lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5), steps=20)
case("warm_restarts_mult", 'kind = "cosine_annealing_warm_restarts"\nt_0 = 3\nt_mult = 2\neta_min = 0.01',
     lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.01), steps=40)
case("cyclic_triangular", 'kind = "cyclic"\nbase_lr = 0.01\nmax_lr = 0.1\nstep_size_up = 4\ncycle_momentum = false',
     lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4, cycle_momentum=False), steps=30)
case("cyclic_triangular2", 'kind = "cyclic"\nbase_lr = 0.001\nmax_lr = 0.1\nstep_size_up = 3\nstep_size_down = 5\nmode = "triangular2"\ncycle_momentum = false',
     lambda o: S.CyclicLR(o, base_lr=0.001, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2", cycle_momentum=False), steps=40)
case("cyclic_exp_range", 'kind = "cyclic"\nbase_lr = 0.01\nmax_lr = 0.1\nstep_size_up = 5\nmode = "exp_range"\ngamma = 0.98\ncycle_momentum = false',
     lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, mode="exp_range", gamma=0.98, cycle_momentum=False), steps=40)
case("one_cycle", 'kind = "one_cycle"\nmax_lr = 0.1\ntotal_steps = 20\ncycle_momentum = false',
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=20, cycle_momentum=False), steps=21)
case("one_cycle_linear_three_phase", 'kind = "one_cycle"\nmax_lr = 1\ntotal_steps = 30\npct_start = 0.25\nanneal_strategy = "linear"\nthree_phase = true\ndiv_factor = 10\nfinal_div_factor = 100\ncycle_momentum = false',
     lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=30, pct_start=0.25, anneal_strategy="linear", three_phase=True, div_factor=10, final_div_factor=100, cycle_momentum=False), steps=31)
# --- momentum cycled (PyTorch's default for both) ---
case("cyclic_momentum_defaults", 'kind = "cyclic"\nbase_lr = 0.01\nmax_lr = 0.1\nstep_size_up = 4',
     lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4), steps=30)
case("cyclic_momentum_triangular2", 'kind = "cyclic"\nbase_lr = 0.001\nmax_lr = 0.1\nstep_size_up = 3\nstep_size_down = 5\nmode = "triangular2"\nbase_momentum = 0.5\nmax_momentum = 0.99',
     lambda o: S.CyclicLR(o, base_lr=0.001, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2", base_momentum=0.5, max_momentum=0.99), steps=40)
case("cyclic_momentum_exp_range_adam", 'kind = "cyclic"\nbase_lr = 0.01\nmax_lr = 0.1\nstep_size_up = 5\nmode = "exp_range"\ngamma = 0.98',
     lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, mode="exp_range", gamma=0.98), steps=40, adam=True)
case("one_cycle_momentum_defaults", 'kind = "one_cycle"\nmax_lr = 0.1\ntotal_steps = 20',
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=20), steps=21)
case("one_cycle_momentum_adam", 'kind = "one_cycle"\nmax_lr = 0.01\ntotal_steps = 50\npct_start = 0.4\nbase_momentum = 0.8\nmax_momentum = 0.9',
     lambda o: S.OneCycleLR(o, max_lr=0.01, total_steps=50, pct_start=0.4, base_momentum=0.8, max_momentum=0.9), steps=51, adam=True)
case("one_cycle_momentum_three_phase", 'kind = "one_cycle"\nmax_lr = 1\ntotal_steps = 30\npct_start = 0.25\nanneal_strategy = "linear"\nthree_phase = true\ndiv_factor = 10\nfinal_div_factor = 100\nbase_momentum = 0.7',
     lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=30, pct_start=0.25, anneal_strategy="linear", three_phase=True, div_factor=10, final_div_factor=100, base_momentum=0.7), steps=30)
case("one_cycle_epochs", 'kind = "one_cycle"\nmax_lr = 0.1\nepochs = 4\nsteps_per_epoch = 5',
     lambda o: S.OneCycleLR(o, max_lr=0.1, epochs=4, steps_per_epoch=5), steps=21)
case("one_cycle_total_steps_wins", 'kind = "one_cycle"\nmax_lr = 0.1\ntotal_steps = 12\nepochs = 4\nsteps_per_epoch = 5',
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=12, epochs=4, steps_per_epoch=5), steps=13)
case("sequential_momentum_at_milestone", '''kind = "sequential"
milestones = [4]
schedules = [{ kind = "linear", start_factor = 0.5, total_iters = 4 }, { kind = "cyclic", base_lr = 0.02, max_lr = 0.2, step_size_up = 3 }]''',
     lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.5, total_iters=4), S.CyclicLR(o, base_lr=0.02, max_lr=0.2, step_size_up=3)], milestones=[4]), steps=16)
case("sequential_one_cycle_then_step", '''kind = "sequential"
milestones = [10]
schedules = [{ kind = "one_cycle", max_lr = 0.1, total_steps = 10 }, { kind = "step", step_size = 3 }]''',
     lambda o: S.SequentialLR(o, [S.OneCycleLR(o, max_lr=0.1, total_steps=10), S.StepLR(o, 3)], milestones=[10]), steps=20)
# OneCycleLR reads its bounds from the param group, where a schedule built after it writes its own.
case("sequential_one_cycle_then_cyclic", '''kind = "sequential"
milestones = [10]
schedules = [{ kind = "one_cycle", max_lr = 0.1, total_steps = 10 }, { kind = "cyclic", base_lr = 0.01, max_lr = 0.1, step_size_up = 4 }]''',
     lambda o: S.SequentialLR(o, [S.OneCycleLR(o, max_lr=0.1, total_steps=10), S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4)], milestones=[10]), steps=20)
case("sequential_two_one_cycles", '''kind = "sequential"
milestones = [8]
schedules = [{ kind = "one_cycle", max_lr = 0.1, total_steps = 8 }, { kind = "one_cycle", max_lr = 0.5, total_steps = 10, div_factor = 5, final_div_factor = 50, base_momentum = 0.6, max_momentum = 0.8 }]''',
     lambda o: S.SequentialLR(o, [S.OneCycleLR(o, max_lr=0.1, total_steps=8), S.OneCycleLR(o, max_lr=0.5, total_steps=10, div_factor=5, final_div_factor=50, base_momentum=0.6, max_momentum=0.8)], milestones=[8]), steps=18)
case("sequential_one_cycle_then_rates_only_one_cycle", '''kind = "sequential"
milestones = [6]
schedules = [{ kind = "one_cycle", max_lr = 0.1, total_steps = 6 }, { kind = "one_cycle", max_lr = 0.3, total_steps = 6, cycle_momentum = false }]''',
     lambda o: S.SequentialLR(o, [S.OneCycleLR(o, max_lr=0.1, total_steps=6), S.OneCycleLR(o, max_lr=0.3, total_steps=6, cycle_momentum=False)], milestones=[6]), steps=12)
case("chained_one_cycle_exponential", '''kind = "chained"
schedules = [{ kind = "one_cycle", max_lr = 0.1, total_steps = 15 }, { kind = "exponential", gamma = 0.9 }]''',
     lambda o: S.ChainedScheduler([S.OneCycleLR(o, max_lr=0.1, total_steps=15), S.ExponentialLR(o, gamma=0.9)]), steps=15)
case("multiplicative", 'kind = "multiplicative"\nfactor = 0.9', lambda o: S.MultiplicativeLR(o, lambda t: 0.9), steps=30)

# --- composites ---
case("sequential_constant_exponential", '''kind = "sequential"
milestones = [2]
schedules = [{ kind = "constant", factor = 0.1, total_iters = 2 }, { kind = "exponential", gamma = 0.9 }]''',
     lambda o: S.SequentialLR(o, [S.ConstantLR(o, factor=0.1, total_iters=2), S.ExponentialLR(o, gamma=0.9)], milestones=[2]), steps=12)
case("sequential_linear_cosine", '''kind = "sequential"
milestones = [3]
schedules = [{ kind = "linear", start_factor = 0.1, total_iters = 3 }, { kind = "cosine_annealing", t_max = 5 }]''',
     lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=3), S.CosineAnnealingLR(o, T_max=5)], milestones=[3]), steps=20)
case("sequential_three", '''kind = "sequential"
milestones = [4, 8]
[[schedules]]
kind = "step"
step_size = 2
gamma = 0.5
[[schedules]]
kind = "multi_step"
milestones = [1, 3]
[[schedules]]
kind = "exponential"
gamma = 0.8''',
     lambda o: S.SequentialLR(o, [S.StepLR(o, 2, 0.5), S.MultiStepLR(o, [1, 3]), S.ExponentialLR(o, 0.8)], milestones=[4, 8]), steps=14)
case("sequential_milestone_zero", '''kind = "sequential"
milestones = [0]
schedules = [{ kind = "constant", factor = 0.5 }, { kind = "exponential", gamma = 0.5 }]''',
     lambda o: S.SequentialLR(o, [S.ConstantLR(o, factor=0.5), S.ExponentialLR(o, gamma=0.5)], milestones=[0]), steps=6)
case("sequential_restarts_warm_restarts", '''kind = "sequential"
milestones = [3]
schedules = [{ kind = "constant", factor = 0.5, total_iters = 3 }, { kind = "cosine_annealing_warm_restarts", t_0 = 4 }]''',
     lambda o: S.SequentialLR(o, [S.ConstantLR(o, factor=0.5, total_iters=3), S.CosineAnnealingWarmRestarts(o, T_0=4)], milestones=[3]), steps=15)
case("sequential_cyclic", '''kind = "sequential"
milestones = [4]
schedules = [{ kind = "linear", start_factor = 0.5, total_iters = 4 }, { kind = "cyclic", base_lr = 0.02, max_lr = 0.2, step_size_up = 3, cycle_momentum = false }]''',
     lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.5, total_iters=4), S.CyclicLR(o, base_lr=0.02, max_lr=0.2, step_size_up=3, cycle_momentum=False)], milestones=[4]), steps=16)
case("warmup_cosine", '''kind = "warmup"
steps = 5
start_factor = 0.1
then = { kind = "cosine_annealing", t_max = 20, eta_min = 0.001 }''',
     lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5), S.CosineAnnealingLR(o, T_max=20, eta_min=0.001)], milestones=[5]), steps=30)
case("chained_constant_exponential", '''kind = "chained"
schedules = [{ kind = "constant", factor = 0.5, total_iters = 3 }, { kind = "exponential", gamma = 0.9 }]''',
     lambda o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=3), S.ExponentialLR(o, gamma=0.9)]), steps=10)
case("chained_step_cosine", '''kind = "chained"
schedules = [{ kind = "step", step_size = 3, gamma = 0.5 }, { kind = "cosine_annealing", t_max = 10 }]''',
     lambda o: S.ChainedScheduler([S.StepLR(o, 3, 0.5), S.CosineAnnealingLR(o, T_max=10)]), steps=25)
case("chained_with_sequential", '''kind = "chained"
[[schedules]]
kind = "sequential"
milestones = [3]
schedules = [{ kind = "linear", start_factor = 0.2, total_iters = 3 }, { kind = "step", step_size = 2 }]
[[schedules]]
kind = "exponential"
gamma = 0.95''',
     lambda o: S.ChainedScheduler([S.SequentialLR(o, [S.LinearLR(o, start_factor=0.2, total_iters=3), S.StepLR(o, 2)], milestones=[3]), S.ExponentialLR(o, 0.95)]), steps=12)
case("sequential_with_chained_first", '''kind = "sequential"
milestones = [4]
[[schedules]]
kind = "chained"
schedules = [{ kind = "constant", factor = 0.5, total_iters = 2 }, { kind = "exponential", gamma = 0.9 }]
[[schedules]]
kind = "step"
step_size = 2
gamma = 0.5''',
     lambda o: S.SequentialLR(o, [S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=2), S.ExponentialLR(o, gamma=0.9)]), S.StepLR(o, 2, 0.5)], milestones=[4]), steps=10)

# --- observation-driven ---
plateau_metrics = [1.0, 0.9, 0.9, 0.9, 0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.84999, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
case("plateau_min_rel", '''kind = "reduce_on_plateau"
factor = 0.5
patience = 2
cooldown = 1
min_lr = 0.01''',
     lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=2, cooldown=1, min_lr=0.01), steps=len(plateau_metrics) + 1, metrics=plateau_metrics)
acc = [0.5, 0.6, 0.65, 0.66, 0.7, 0.7, 0.71, 0.71, 0.71, 0.9, 0.9, 0.9, 0.9, 0.9]
case("plateau_max_abs", '''kind = "reduce_on_plateau"
mode = "max"
threshold_mode = "abs"
threshold = 0.05
patience = 1
factor = 0.1''',
     lambda o: S.ReduceLROnPlateau(o, mode="max", threshold_mode="abs", threshold=0.05, patience=1, factor=0.1), steps=len(acc) + 1, metrics=acc)
flat = [1.0] * 40
case("plateau_eps_stops_tiny_reductions", '''kind = "reduce_on_plateau"
patience = 0
factor = 0.5
eps = 0.01''',
     lambda o: S.ReduceLROnPlateau(o, patience=0, factor=0.5, eps=0.01), steps=len(flat) + 1, metrics=flat)
case("plateau_defaults", 'kind = "reduce_on_plateau"',
     lambda o: S.ReduceLROnPlateau(o), steps=len(flat) + 1, metrics=flat)


def run(c):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=c["base"]) if c["adam"] else SGD([p], lr=c["base"])
    sched = c["build"](opt)
    rates, momenta = [], []
    for t in range(c["steps"]):
        g = opt.param_groups[0]
        rates.append(g["lr"])
        momenta.append(g["betas"][0] if c["adam"] else g["momentum"])
        opt.step()
        if sched is None or t + 1 == c["steps"]:
            continue
        if c["metrics"] is not None:
            if t < len(c["metrics"]):
                sched.step(c["metrics"][t])
        else:
            sched.step()
    return rates, momenta


out = []
for c in CASES:
    rates, momenta = run(c)
    assert all(isinstance(r, float) and math.isfinite(r) for r in rates), c["name"]
    out.append(dict(name=c["name"], toml=c["toml"], lr=c["base"], steps=c["steps"], metrics=c["metrics"], rates=rates,
                    optimizer="adam" if c["adam"] else "sgd", momenta=momenta))

# OneCycleLR past total_steps raises; Kiln must too.
opt = SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
s = S.OneCycleLR(opt, max_lr=0.1, total_steps=5, cycle_momentum=False)
raised_at = None
for t in range(10):
    opt.step()
    try:
        s.step()
    except ValueError:
        raised_at = t + 1
        break
print(json.dumps(dict(torch=torch.__version__, one_cycle_5_raises_at_update=raised_at, cases=out), indent=1))
