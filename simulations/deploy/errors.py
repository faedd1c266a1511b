"""The deployment's own error."""


class DeploymentError(RuntimeError):
    """A process of the deployment failed to start, or the run did not complete."""
