"""Every write in the billing domain. One module per aggregate; views, admin and tasks call these."""
