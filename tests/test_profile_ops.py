"""Per-op XLA timings (`toonjax.tools.profile_ops`; `launch/benchmark.py --profile` is run by
test_benchmark.py::test_launch_benchmark_script)."""

import subprocess
import sys
import textwrap

from toonjax.tools import profile_ops

_HLO = """\
HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[8,8]{1,0})->f32[8,8]{1,0}}

%fused_computation.3 (param_0: f32[8,8], param_1: f32[8,8]) -> f32[8,8] {
  %param_0 = f32[8,8]{1,0} parameter(0)
  %param_1 = f32[8,8]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,8]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main.9 (x.1: f32[8,8]) -> f32[8,8] {
  %x.1 = f32[8,8]{1,0} parameter(0)
  %ynn_fusion.2 = f32[8,8]{1,0} fusion(%x.1, %x.1), kind=kCustom, calls=%fused_computation.3, metadata={op_name="jit(step)/dot_general" source_file="/a/b/model.py" source_line=12}
  ROOT %tanh.4 = f32[8,8]{1,0} tanh(%ynn_fusion.2), metadata={op_name="jit(step)/tanh"}
}
"""  # noqa: E501


def test_parse_hlo_names_what_each_instruction_computes():
    module, instrs = profile_ops.parse_hlo(_HLO)
    assert module == "jit_step"
    fusion = instrs["ynn_fusion.2"]
    assert fusion.op == "fusion:dot (kCustom)" and fusion.shape == "f32[8,8]"
    assert fusion.op_name == "jit(step)/dot_general" and fusion.source == "model.py:12"
    assert instrs["tanh.4"].op == "tanh" and instrs["tanh.4"].op_name.endswith("/tanh")


def test_a_traced_program_puts_its_time_on_the_matrix_product(tmp_path):
    """A 768^3 matrix product next to a small elementwise op: the table must give the product
    most of the time, name it a dot from `dot_general`, and count one run per call."""
    script = textwrap.dedent(
        f"""
        from toonjax.tools import profile_ops
        profile_ops.dump_flags({str(tmp_path)!r})
        import jax, jax.numpy as jnp
        f = jax.jit(lambda a, b, c: (a @ b, jnp.tanh(c)))
        a = jnp.ones((768, 768)); c = jnp.ones((16,))
        jax.block_until_ready(f(a, a, c))
        with jax.profiler.trace({str(tmp_path / "trace")!r}):
            for _ in range(3):
                jax.block_until_ready(f(a, a, c))
        print(profile_ops.op_table({str(tmp_path)!r}, top=5))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    rows = [r for r in out.splitlines() if r.startswith("| ") and "%" in r.split("|")[1]]
    first = [c.strip() for c in rows[0].split("|")[1:-1]]
    share, _, runs, program, _, what, shape, src = first
    assert "dot" in what and shape == "f32[768,768]" and "dot_general" in src, first
    assert float(share.rstrip("%")) > 50 and runs == "3" and program.startswith("jit_")
    shares = [r for r in out.splitlines() if r.count("|") == 3 and r.rstrip(" |").endswith("%")]
    classes = {r.split("|")[1].strip(): float(r.split("|")[2].strip().rstrip("%")) for r in shares}
    assert set(classes) >= set(profile_ops.CLASSES) and classes["matrix product"] > 50
    # the per-kind totals add up to 100%, and so do the per-class ones
    kinds = [r for r in shares if r.split("|")[1].strip() not in profile_ops.CLASSES]
    assert abs(sum(float(r.split("|")[2].strip().rstrip("%")) for r in kinds) - 100) < 1.0
    assert abs(sum(classes[c] for c in profile_ops.CLASSES) - 100) < 1.0


def test_op_classes():
    assert profile_ops.op_class("fusion:convolution,reduce-window") == "convolution"
    assert profile_ops.op_class("dot") == "matrix product"
    assert profile_ops.op_class("fusion:copy,slice,transpose") == "copy/transpose"
    assert profile_ops.op_class("fusion:add,broadcast,multiply,pad") == "elementwise"
    assert profile_ops.op_class("fusion:reduce") == "reduction"
    assert profile_ops.op_class("custom-call") == "other"
