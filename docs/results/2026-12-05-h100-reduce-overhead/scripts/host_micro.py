"""Host cost of the Python path's parts, in us per call (min over 5 repeats), on this machine.
With the plan's C calls stubbed out (return 0) for the module rows, so only Python and PyTorch
remain. Runs on a GPU (cuda tensors, cuDNN kernel) or, without one, on the CPU (reference kernel)."""
import sys, timeit
import torch
import ulysses, ulysses.torch as ut

cuda = torch.cuda.is_available()
dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
seq = 8192 if cuda else 64
if cuda:
    comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
    kernel = ulysses.cudnn_kernel(0)
    dt = torch.bfloat16
else:
    comm, kernel, dt = ulysses.loopback_group(1)[0], ulysses.reference_kernel(), torch.float32
cfg = ulysses.PlanConfig(num_heads_q=32, num_heads_kv=8, head_dim=128, causal=True,
                         strategy="ulysses", cp=1, seqlen=seq, dtype="bf16" if cuda else "fp32")
attn = ut.UlyssesAttention(cfg, comm, kernel)
q = torch.rand(1, seq, 32, 128, device=dev).to(dt)
k, v = (torch.rand(1, seq, 8, 128, device=dev).to(dt) for _ in range(2))
d_o = torch.rand_like(q)
xs = [x.requires_grad_() for x in (q, k, v)]
o = torch.empty_like(q)


def t(name, fn, n=2000):
    best = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
    print(f"{best:9.2f} us  {name}", flush=True)


def step():
    for x in xs:
        x.grad = None
    attn(*xs).backward(d_o)


for _ in range(3):
    step()
if cuda:
    torch.cuda.synchronize()
print(f"host: {'GPU ' + torch.cuda.get_device_name(0) if cuda else 'CPU only'}, python "
      f"{sys.version.split()[0]}, torch {torch.__version__}")
t("ulysses._tensor(q)", lambda: ulysses._tensor(q, "q"))
t("torch.cuda.current_stream(dev)" if cuda else "(no stream)",
  (lambda: torch.cuda.current_stream(dev)) if cuda else (lambda: None))
if cuda:
    t("ulysses._stream(torch.cuda.current_stream(dev))",
      lambda: ulysses._stream(torch.cuda.current_stream(dev)))
    t("torch._C._cuda_getCurrentRawStream(0)", lambda: torch._C._cuda_getCurrentRawStream(0))
    t("torch.cuda.is_current_stream_capturing()", torch.cuda.is_current_stream_capturing)
t("plan.workspace_bytes", lambda: attn.plan.workspace_bytes)
t("q.new_empty(q.shape)", lambda: q.new_empty(q.shape))
t("torch.empty_like(q)", lambda: torch.empty_like(q))
t("attn._saved_buffer(dev)", lambda: attn._saved_buffer(dev))
t("torch.compiler.is_compiling()", torch.compiler.is_compiling)


class Stub:  # ulysses._lib with the plan's calls doing nothing
    def __init__(self, lib):
        self._lib = lib

    def __getattr__(self, name):
        if name in ("ulysses_plan_forward", "ulysses_plan_backward"):
            return lambda *a: 0
        return getattr(self._lib, name)


real = ulysses._lib
ulysses._lib = Stub(real)
ws = attn._workspace(dev)
saved = attn._saved_buffer(dev)
t("Plan.forward, C call stubbed", lambda: attn.plan.forward(
    q, k, v, o, workspace=ws, saved=saved, stream=attn._stream(dev)))
t("module forward (autograd.Function), C stubbed", lambda: attn(*xs), n=1000)
t("module forward + backward, C stubbed", step, n=500)
ulysses._lib = real
t("module forward + backward, real (host time; GPU runs behind)" if cuda else
  "module forward + backward, real", step, n=50)
if cuda:
    torch.cuda.synchronize()
