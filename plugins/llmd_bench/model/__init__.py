"""The campaign model: campaign files and run params, configurations, the version catalog, the deployment's settings,
runtime names, paths, names and errors. Imports nothing else of the package."""
