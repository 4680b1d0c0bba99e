"""An example builder in Python: refuses a Dockerfile whose image would run
as root, then builds with podman exactly as the built-in podman builder
does, so it runs under that builder's grants (`--grants-of podman`).

Built into a component with componentize-py against wit/current:
    componentize-py -d ../../../wit/current -w builder componentize app -o python_user_policy.wasm
"""

from componentize_py_types import Err
from wit_world import WitWorld
from wit_world.exports import BuilderInfo, builder_info
from wit_world.imports import command_runner, job_context, types

LOCAL_IMAGE = "localhost/helix-image"


class BuilderInfo(BuilderInfo):
    def info(self) -> builder_info.Metadata:
        return builder_info.Metadata(
            name="python-user-policy",
            version="0.1.0",
            description="Python: refuses images that would run as root, then builds with podman",
            simulated=False,
        )


def platform(p: types.Platform) -> str:
    return f"{p.os}/{p.arch}" + (f"/{p.variant}" if p.variant else "")


class WitWorld(WitWorld):
    def build(self, job: types.Job) -> types.BuildOutput:
        context = job.source_dir if job.context == "." else f"{job.source_dir}/{job.context}"
        dockerfile = f"{context}/{job.dockerfile_path}"
        with open(f"{job_context.workspace()}/{dockerfile}") as text:
            users = [l.split()[1] for l in text if len(l.split()) > 1 and l.split()[0].upper() == "USER"]
        if not users or users[-1] in ("root", "0", "root:root", "0:0"):
            raise Err(types.BuildError_InvalidJob(
                f"{job.dockerfile_path} would run as root: end it with `USER <a non-root user>`"))
        network = job_context.setting("network") or "none"
        cgroup = job_context.setting("cgroup-parent") or ""
        args = ["--cgroup-manager", "cgroupfs", "build", "--isolation", "oci", "--runtime", "runc",
                "--network", network, f"--cgroup-parent={cgroup}", "-f", dockerfile,
                "--layers", "--force-rm"]
        args += [f"--build-arg={a.name}={a.value}" for a in sorted(job.build_args, key=lambda a: a.name)]
        args += [f"--target={job.target}"] if job.target else []
        args += [f"--label={k}={v}" for k, v in job.labels]
        args += ["--no-cache"] if job.no_cache else []
        args += [f"--secret=id={name}" for name in job.secrets]
        platforms = [platform(p) for p in job.platforms]
        args += [f"--platform={','.join(platforms)}"]
        args += [f"--{'manifest' if len(platforms) > 1 else 'tag'}={LOCAL_IMAGE}", context]
        job_context.log(f"[python] building {job.repo_url} at {job.commit or job.git_ref} with podman")
        try:
            out = command_runner.run(command_runner.Command("podman", args, [], None, None))
        except Err as e:
            refusal = e.value
            if isinstance(refusal, command_runner.RunError_Denied):
                raise Err(types.BuildError_Denied(refusal.value))
            if isinstance(refusal, command_runner.RunError_Cancelled):
                raise Err(types.BuildError_Cancelled())
            raise Err(types.BuildError_Internal(f"podman did not run: {refusal}"))
        if out.exit_code != 0:
            lines = [l for l in out.stderr.splitlines() if l.strip()]
            raise Err(types.BuildError_Build(f"podman build failed: {lines[-1] if lines else 'no output'}"))
        return types.BuildOutput_LocalImage()
