"""The citizen portal: a partner application that uses the mesh only through its public REST
edge, as the registered `citizen-portal` client (see README.md)."""
