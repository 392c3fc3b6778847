"""Who owns a trial or a submission: leases that hold under frozen writers, containers and quotas."""
