"""Console: the dispatch centre's, responders', grid workers' and supervisors' web app and its gateway."""
