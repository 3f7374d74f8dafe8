"""Memory a UlyssesAttention layer holds from forward to backward (cp = 1, one GPU): q, k, v made
by an op (not leaves), dropped after forward as a model's projections would let them go."""
import sys
import torch
import ulysses, ulysses.torch as ut

torch.cuda.set_device(0)
comm = ulysses.nccl_communicator(ulysses.nccl_unique_id(), 1, 0, 0)
kernel = ulysses.cudnn_kernel(0)
seq = int(sys.argv[1]) if len(sys.argv) > 1 else 32768
for saved in ("heads", "lse"):
    cfg = ulysses.PlanConfig(num_heads_q=32, num_heads_kv=8, head_dim=128, causal=True,
                             strategy="ulysses", cp=1, seqlen=seq, dtype="bf16",
                             saved_activations=saved)
    attn = ut.UlyssesAttention(cfg, comm, kernel)
    leaves = [torch.randn((1, seq, h, 128), device="cuda", dtype=torch.bfloat16,
                          requires_grad=True) for h in (32, 8, 8)]
    d_o = torch.randn((1, seq, 32, 128), device="cuda", dtype=torch.bfloat16)
    for it in range(2):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        xs = [x * 1.0 for x in leaves]
        o = attn(*xs)
        del xs
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated() - before
        o.backward(d_o)
        del o
        for x in leaves:
            x.grad = None
    print(f"{ulysses.torch.__file__.split('/')[-4]} seq {seq} saved {saved}: held from forward to "
          f"backward {held / 2**20:.1f} MiB (O {seq * 32 * 128 * 2 / 2**20:.0f} MiB of it; "
          f"q, k, v {seq * 48 * 128 * 2 / 2**20:.0f} MiB)", flush=True)
