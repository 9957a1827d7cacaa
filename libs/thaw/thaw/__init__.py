"""thaw: serverless Python on your own machines. `import thaw as modal`."""
