"""What eager bf16 FLUX does to the time/guidance embedding input: timestep.to(bf16) * 1000 rounded to bf16."""
import torch
sig = torch.linspace(1, 0, 29)[:28].bfloat16()
exact = sig.double() * 1000
eager = (sig * 1000).double()  # the bf16 multiply eager runs
print("t exact :", [round(v, 2) for v in exact.tolist()[:8]], "...")
print("t eager :", eager.tolist()[:8], "...")
print("max |err| = %.2f, mean |err| = %.2f timestep units" % ((eager - exact).abs().max(), (eager - exact).abs().mean()))
print("guidance: exact 3500, eager", (torch.tensor([3.5]).bfloat16() * 1000).item())
# phase error of the highest-frequency sinusoid channel (frequency 1 rad / timestep unit) and the median channel
f = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(128) / 128).double()
print("phase error rad, channel 0 (f=1): max %.2f; channel 32 (f=%.3f): max %.2f" % ((eager - exact).abs().max(), f[32], ((eager - exact).abs() * f[32]).max()))
