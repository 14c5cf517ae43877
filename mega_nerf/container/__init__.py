"""The merged model: every cell's submodule behind one routing and blending front."""
from mega_nerf.container.container import Container, load_container, save_container  # noqa: F401
