"""What a run reports: Report, Table and Figure with their rendering, the statistics behind intervals, and the
usage and faults sections every report ends with."""
